#include "kernels/cpu/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quantize_activations.h"
#include "kernels/cpu/vec_dot.h"
#include "kernels/cpu/vec_dot_q8.h"

namespace pipellm {

namespace {

constexpr int64_t kRowTile = 16;   // rows decoded at once for multi-token products
constexpr int64_t kRowAlign = 4;   // thread chunks start at multiples of this
constexpr int64_t kMr = 4;         // micro-kernel: rows ...
constexpr int64_t kMt = 3;         // ... times tokens, 12 accumulators
constexpr size_t kQ8TileBytes = 16 * 1024;  // weight rows kept in L1 while every token passes
constexpr int kMaxActParts = 3;             // 8-bit parts per activation vector: float accuracy
constexpr int64_t kFloatTileMinTokens = 4;  // from this many tokens on, float tiles beat integer dots

__attribute__((target("avx2,fma"))) float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[t * ys + r] = dot(w + r*n, x + t*xs) for r < kMr, t < kMt; n a multiple of 8.
__attribute__((target("avx2,fma"))) void dot_4x3(const float* w, int64_t n, const float* x, int64_t xs, float* y,
                                                  int64_t ys) {
  __m256 acc[kMr][kMt];
  for (auto& row : acc) {
    for (auto& a : row) a = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 x0 = _mm256_loadu_ps(x + i);
    const __m256 x1 = _mm256_loadu_ps(x + xs + i);
    const __m256 x2 = _mm256_loadu_ps(x + 2 * xs + i);
    for (int64_t r = 0; r < kMr; ++r) {
      const __m256 wr = _mm256_loadu_ps(w + r * n + i);
      acc[r][0] = _mm256_fmadd_ps(wr, x0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(wr, x1, acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(wr, x2, acc[r][2]);
    }
  }
  for (int64_t r = 0; r < kMr; ++r) {
    for (int64_t t = 0; t < kMt; ++t) y[t * ys + r] = hsum(acc[r][t]);
  }
}

bool have_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

// Rows [r0, r1) for several tokens with float activations: a tile of rows decoded to floats
// once, then a register-blocked kernel over (kMr rows x kMt tokens), the edges one dot at a time.
void matmul_float_tiles(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const auto* w = static_cast<const uint8_t*>(a.w);
  const VecDotFn dot = vec_dot_kernel(TensorType::F32);
  const bool micro = have_avx2_fma() && a.n % 8 == 0;
  std::vector<float> tile(static_cast<size_t>(kRowTile * a.n));
  for (int64_t rt = r0; rt < r1; rt += kRowTile) {
    const int64_t nr = std::min(kRowTile, r1 - rt);
    for (int64_t r = 0; r < nr; ++r) {
      dequantize_row(a.type, w + static_cast<size_t>(rt + r) * a.row_bytes, tile.data() + r * a.n, a.n);
    }
    // Register-blocked part: groups of kMr rows x kMt tokens; the edges one dot at a time.
    const int64_t nr_blocked = micro ? nr / kMr * kMr : 0;
    const int64_t nt_blocked = micro ? a.n_tokens / kMt * kMt : 0;
    for (int64_t t = 0; t < nt_blocked; t += kMt) {
      for (int64_t r = 0; r < nr_blocked; r += kMr) {
        dot_4x3(tile.data() + r * a.n, a.n, a.x + t * a.x_stride, a.x_stride, a.y + t * a.y_stride + rt + r,
                a.y_stride);
      }
    }
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const float* xt = a.x + t * a.x_stride;
      float* yt = a.y + t * a.y_stride + rt;
      for (int64_t r = t < nt_blocked ? nr_blocked : 0; r < nr; ++r) yt[r] = dot(tile.data() + r * a.n, xt, a.n);
    }
  }
}

// Rows are read from memory a few rows ahead of the dot products: the integer kernels leave
// the hardware prefetcher too few outstanding misses to stream from DRAM at full rate (weights
// read once per step, as a decode token's experts, ran at a third of the plain read rate).
constexpr int64_t kPrefetchRows = 2;
inline void prefetch_row(const uint8_t* p, size_t bytes) {
  for (size_t i = 0; i < bytes; i += 64) _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T0);
}

// Rows [r0, r1) against 8-bit activations, each token split into a.act_parts rounded parts
// (quantize_activations_split) that the kernel takes in one pass over the row, unpacking it
// once for all of them: y = sum of the parts' integer dots. Each thread rounds every token
// itself (n values per token, cheap next to the n_rows * n product, identical in every thread).
void matmul_q8(const MatmulArgs& a, ActQuant aq, const VecDotQ8Kernels& k, int64_t r0, int64_t r1) {
  const int parts = a.act_parts;
  const size_t xb = act_quant_bytes(aq, a.n), tb = xb * static_cast<size_t>(parts);
  std::vector<uint8_t> xq(tb * static_cast<size_t>(a.n_tokens));
  for (int64_t t = 0; t < a.n_tokens; ++t) quantize_activations_split(aq, a.x + t * a.x_stride, a.n, parts, xq.data() + t * tb);
  const auto* w = static_cast<const uint8_t*>(a.w);
  const int64_t tile = a.n_tokens == 1 ? r1 - r0 : std::max<int64_t>(1, static_cast<int64_t>(kQ8TileBytes / a.row_bytes));
  float out[kMaxActParts];
  for (int64_t r = r0; r < std::min(r1, r0 + kPrefetchRows); ++r) prefetch_row(w + static_cast<size_t>(r) * a.row_bytes, a.row_bytes);
  for (int64_t rt = r0; rt < r1; rt += tile) {
    const int64_t re = std::min(r1, rt + tile);
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      for (int64_t r = rt; r < re; ++r) {
        if (t == 0 && r + kPrefetchRows < r1) prefetch_row(w + static_cast<size_t>(r + kPrefetchRows) * a.row_bytes, a.row_bytes);
        k.tokens(w + static_cast<size_t>(r) * a.row_bytes, xq.data() + t * tb, xb, parts, a.n, out);
        float y = out[0];
        for (int p = 1; p < parts; ++p) y += out[p];
        a.y[t * a.y_stride + r] = y;
      }
    }
  }
}

}  // namespace

void matmul(const MatmulArgs& a, int ith, int nth) {
  // Contiguous chunk of rows for this thread.
  const int64_t per = ((a.n_rows + nth - 1) / nth + kRowAlign - 1) / kRowAlign * kRowAlign;
  const int64_t r0 = std::min(a.n_rows, per * ith);
  const int64_t r1 = std::min(a.n_rows, r0 + per);
  if (r0 >= r1) return;
  const auto* w = static_cast<const uint8_t*>(a.w);

  const ActQuant aq = act_quant_for(a.type);
  if (aq != ActQuant::None && a.n % act_quant_block_size(aq) == 0) {
    const VecDotQ8Kernels k = vec_dot_q8_kernels(a.type);
    if (a.act_parts < 1 || a.act_parts > kMaxActParts) throw InvalidArgument("matmul: act_parts must be 1..3");
    if (k.one != nullptr && a.n_tokens < kFloatTileMinTokens) {
      matmul_q8(a, aq, k, r0, r1);
      return;
    }
    // Many tokens: the float tiles below beat integer dots with several activation parts.
    // They take x itself: three parts carry x to float precision (about 6e-8 of the block's
    // largest value), so prefill and decode still agree to float rounding.
  }

  if (a.n_tokens == 1) {
    vec_dot_rows(a.type, w + static_cast<size_t>(r0) * a.row_bytes, a.row_bytes, r1 - r0, a.x, a.n, a.y + r0);
    return;
  }
  matmul_float_tiles(a, r0, r1);
}

}  // namespace pipellm

#include "kernels/cuda/attention_mma.h"

#include <cuda_fp16.h>

#include <string>

#include "base/error.h"
#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/attention_split.cuh"
#include "kernels/cuda/cuda_check.h"

namespace pipellm::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kChunk = 16;  // keys per step of a warp (the k of the P V product)
constexpr int kRows = 16;   // query rows (token, head) per block at most (the m of the products)

// Shared memory of one block: per warp, two buffers of kChunk key rows and kChunk value rows
// (f16). Row strides: K rows are read 16 bytes per lane, two rows per 8-lane phase, so their
// stride is 64 bytes past a multiple of 128 (no bank conflicts); V rows are read by ldmatrix, 8
// rows at one column, so their stride is 16 bytes past one.
template <int D>
struct MmaSmem {
  static constexpr int kKStride = D + 32, kVStride = D + 8;  // halves
  static constexpr int kBuf = kChunk * (kKStride + kVStride);  // halves per buffer
  static constexpr int kWarpHalves = 2 * kBuf;
  static constexpr int kBytes = kWarps * kWarpHalves * 2;
  static_assert(kWarps * kRows * D * 4 <= kBytes, "the warps' outputs fit the buffers for the merge");
};

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // lo in the low 16 bits
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const __half* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Issues one warp's copies of keys [key0, key0 + kChunk) (those < k1; zeros past it, so that a
// masked key's value is 0, not stale bytes) into buffer `buf` (ring position key % n_ctx).
template <int D>
__device__ __forceinline__ void copy_chunk(__half* buf, const uint8_t* kc, const uint8_t* vc, int64_t row_bytes,
                                           int key0, int k1, int n_ctx, int lane) {
  using L = MmaSmem<D>;
  constexpr int kPieces = D / 8;  // 16-byte pieces per row
  for (int i = lane; i < kChunk * kPieces; i += 32) {
    const int r = i / kPieces, c = i % kPieces;
    const int key = key0 + r;
    const bool ok = key < k1;
    const int64_t off = static_cast<int64_t>(ok ? key % n_ctx : 0) * row_bytes + 16 * c;
    cp16(buf + r * L::kKStride + 8 * c, kc + off, ok);
    cp16(buf + kChunk * L::kKStride + r * L::kVStride + 8 * c, vc + off, ok);
  }
}

// Block (kv head g, split, tokens TB z .. TB z + TB - 1; TB = a.tokens_per_block, 1 but for prompt
// chunks), as attention.cu's split kernel. Row i of the products is query head g G + i % G of
// token TB z + i / G; each row masks the keys outside its own range. Warp w takes the split's
// chunks w, w + 4, ... Lane (r = lane / 4, q = lane % 4) holds rows r and r + 8 of every
// fragment. The contraction over the head's D values is permuted the same way for Q and K: in
// 32-value group u, the lane's two k16 steps take values 32 u + 8 q + 4 h + {0, 1} (its b0 / a0
// and a1 pair) and + {2, 3} (b1 / a2 and a3), h = 0, 1, so that one 16-byte load gives a lane
// its K values of both steps.
template <int D>
__global__ void __launch_bounds__(kThreads) attention_mma_kernel(AttentionArgs a) {
  using L = MmaSmem<D>;
  constexpr int kSteps = D / 16;  // k16 steps of the scores
  constexpr int kNt = D / 8;      // n8 tiles of the output
  extern __shared__ __align__(16) __half sm[];
  __shared__ float ml[kWarps][kRows][2];

  grid_dependency_wait();
  const int g = blockIdx.x, split = blockIdx.y, TB = a.tokens_per_block, t0 = blockIdx.z * TB;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 2, q = lane & 3;
  const int G = a.n_head / a.n_head_kv;
  const int n_rows = min(TB, a.n_tokens - t0) * G;  // rows with a token
  // The block's keys: from the first token's first to the last token's last (one slot; with
  // several tokens, one split). This lane's rows r and r + 8: their tokens' own ranges.
  const int p = a.pos[t0];
  const int k0 = split_keys(a, p, split).k0, k1 = split_keys(a, a.pos[t0 + n_rows / G - 1], split).k1;
  int lo[2], hi[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int row = r + 8 * hr;
    const SplitKeys k = split_keys(a, row < n_rows ? a.pos[t0 + row / G] : -1, split);
    lo[hr] = k.k0;
    hi[hr] = k.k1;
  }
  const int64_t row_bytes = static_cast<int64_t>(a.n_head_kv) * D * 2;
  const uint8_t* kc = cache_head(a.k_cache, a, t0, p, g, D * 2);
  const uint8_t* vc = cache_head(a.v_cache, a, t0, p, g, D * 2);
  __half* wbuf = sm + warp * L::kWarpHalves;

  // This warp's chunks: key0 = k0 + kChunk * (warp + kWarps * i).
  const int n_chunks = k1 > k0 ? (k1 - k0 + kChunk - 1) / kChunk : 0;
  const int mine = n_chunks > warp ? (n_chunks - warp + kWarps - 1) / kWarps : 0;
  if (mine > 0) copy_chunk<D>(wbuf, kc, vc, row_bytes, k0 + kChunk * warp, k1, a.n_ctx, lane);
  cp_commit();

  // Q rows r and r + 8 (zero past the block's rows or for padding tokens), scaled, as f16 A
  // fragments in the permuted order.
  uint32_t qa[kSteps][4];
#pragma unroll
  for (int u = 0; u < D / 32; ++u) {
    float v[2][8];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int row = r + 8 * hr;
      const bool ok = row < n_rows && a.pos[t0 + row / G] >= 0;
      const int64_t tok = t0 + (ok ? row / G : 0), head = g * G + (ok ? row % G : 0);
      const float* src = a.q + tok * a.q_stride + head * D + 32 * u + 8 * q;
#pragma unroll
      for (int e = 0; e < 8; ++e) v[hr][e] = ok ? src[e] * a.scale : 0.0f;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      qa[2 * u + h][0] = pack_half2(v[0][4 * h], v[0][4 * h + 1]);
      qa[2 * u + h][1] = pack_half2(v[1][4 * h], v[1][4 * h + 1]);
      qa[2 * u + h][2] = pack_half2(v[0][4 * h + 2], v[0][4 * h + 3]);
      qa[2 * u + h][3] = pack_half2(v[1][4 * h + 2], v[1][4 * h + 3]);
    }
  }

  float o[kNt][4];
#pragma unroll
  for (int n = 0; n < kNt; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};  // rows r, r + 8

  for (int i = 0; i < mine; ++i) {
    const int key0 = k0 + kChunk * (warp + kWarps * i);
    if (i + 1 < mine) {
      copy_chunk<D>(wbuf + ((i + 1) & 1) * L::kBuf, kc, vc, row_bytes, key0 + kChunk * kWarps, k1, a.n_ctx, lane);
    }
    cp_commit();
    cp_wait<1>();
    __syncwarp();
    const __half* kb = wbuf + (i & 1) * L::kBuf;
    const __half* vb = kb + kChunk * L::kKStride;

    // Scores of the chunk's two 8-key tiles: s[nt] = {(r, 2q), (r, 2q + 1), (r + 8, 2q), (r + 8, 2q + 1)}.
    float s[2][4] = {};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const __half* krow = kb + (8 * nt + r) * L::kKStride + 8 * q;
#pragma unroll
      for (int u = 0; u < D / 32; ++u) {
        const uint4 w = *reinterpret_cast<const uint4*>(krow + 32 * u);
        mma_f16(s[nt], qa[2 * u], w.x, w.y);
        mma_f16(s[nt], qa[2 * u + 1], w.z, w.w);
      }
    }
    // Online softmax over rows r (elements 0, 1) and r + 8 (2, 3); keys outside a row's range masked.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + 8 * nt + 2 * q + (e & 1);
        if (key < lo[e >> 1] || key >= hi[e >> 1]) s[nt][e] = -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const float m_new = fmaxf(m_run[hr], quad_max(mx[hr]));
      alpha[hr] = m_run[hr] == -INFINITY ? 0.0f : __expf(m_run[hr] - m_new);
      m_run[hr] = m_new;
    }
    float sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = s[nt][e];
        s[nt][e] = x == -INFINITY ? 0.0f : __expf(x - m_run[e >> 1]);
        sum[e >> 1] += s[nt][e];
      }
    }
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) l_run[hr] = l_run[hr] * alpha[hr] + quad_sum(sum[hr]);
#pragma unroll
    for (int n = 0; n < kNt; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // P as the A fragment of the 16 keys (the score tiles' C layout is the A layout's halves).
    const uint32_t pa[4] = {pack_half2(s[0][0], s[0][1]), pack_half2(s[0][2], s[0][3]), pack_half2(s[1][0], s[1][1]),
                            pack_half2(s[1][2], s[1][3])};
    // Output += P V: V's 16 x 16 blocks through ldmatrix.trans (keys lane % 8 + 8 (lane / 8 % 2),
    // columns + 8 (lane / 16)).
    const __half* vrow = vb + ((lane & 7) + 8 * ((lane >> 3) & 1)) * L::kVStride + 8 * (lane >> 4);
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, vrow + 16 * j);
      mma_f16(o[2 * j], pa, b[0], b[1]);
      mma_f16(o[2 * j + 1], pa, b[2], b[3]);
    }
    __syncwarp();  // this buffer is refilled two chunks on
  }
  cp_wait<0>();

  // Merge the warps in a fixed order: the block's maximum per row, each warp's outputs scaled
  // to it in its own slice of the (now free) buffers, then summed in warp order.
  if (q == 0) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      ml[warp][r + 8 * hr][0] = m_run[hr];
      ml[warp][r + 8 * hr][1] = l_run[hr];
    }
  }
  __syncthreads();
  float* ob = reinterpret_cast<float*>(sm);  // [kWarps][kRows][D]
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int row = r + 8 * hr;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, ml[w][row][0]);
    const float sc = m_run[hr] == -INFINITY ? 0.0f : __expf(m_run[hr] - M);
#pragma unroll
    for (int n = 0; n < kNt; ++n) {
      float* dst = ob + (warp * kRows + row) * D + 8 * n + 2 * q;
      dst[0] = o[n][2 * hr] * sc;
      dst[1] = o[n][2 * hr + 1] * sc;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < n_rows * D; e += kThreads) {
    const int row = e / D, d = e % D;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += ob[(w * kRows + row) * D + d];
    partial_o(a, t0 + row / G, g * G + row % G)[split * D + d] = v;
  }
  if (threadIdx.x < n_rows) {
    const int row = threadIdx.x;
    float M = -INFINITY, l = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, ml[w][row][0]);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float mw = ml[w][row][0];
      l += mw == -INFINITY ? 0.0f : ml[w][row][1] * __expf(mw - M);
    }
    float* out = partial_ml(a, t0 + row / G, g * G + row % G) + split * 2;
    out[0] = M;
    out[1] = l;
  }
}

template <int D>
void launch(const AttentionArgs& a, const Launch& s) {
  auto* k = attention_mma_kernel<D>;
  constexpr int kSmem = MmaSmem<D>::kBytes;
  if (kSmem > 48 * 1024) PIPELLM_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const dim3 grid(static_cast<unsigned>(a.n_head_kv), static_cast<unsigned>(a.n_splits),
                  static_cast<unsigned>((a.n_tokens + a.tokens_per_block - 1) / a.tokens_per_block));
  launch_kernel(s, k, LaunchShape{grid, dim3(kThreads), kSmem}, a);
}

}  // namespace

bool attention_mma_supports(const AttentionArgs& a) {
  return a.k_type == TensorType::F16 && a.v_type == TensorType::F16 &&
         (a.head_dim == 64 || a.head_dim == 128 || a.head_dim == 256) &&
         a.n_head_kv > 0 && a.n_head % a.n_head_kv == 0 && a.n_head / a.n_head_kv <= kRows;
}

int attention_tokens_per_block(const AttentionArgs& a) {
  if (!a.tensor_cores || !attention_mma_supports(a) || a.n_splits != 1) return 1;
  return kRows / (a.n_head / a.n_head_kv);
}

void attention_mma_split(const AttentionArgs& a, const Launch& s) {
  if (!attention_mma_supports(a)) {
    throw Error("attention (tensor cores): " + std::string(tensor_type_name(a.k_type)) + " / " +
                tensor_type_name(a.v_type) + " cache, head_dim " + std::to_string(a.head_dim) + ", " +
                std::to_string(a.n_head) + " heads over " + std::to_string(a.n_head_kv) +
                " (f16 caches, head_dim 64, 128 or 256, at most 16 heads per kv head)");
  }
  if (a.head_dim == 64) launch<64>(a, s);
  else if (a.head_dim == 128) launch<128>(a, s);
  else launch<256>(a, s);
  PIPELLM_CUDA_LAUNCH_CHECK("attention_mma");
}

}  // namespace pipellm::cuda

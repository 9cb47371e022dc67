#include "kernels/cuda/attention.h"

#include <algorithm>
#include <string>

#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/kv_quant.h"
#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda/attention_split.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;        // keys per online-softmax step (one per lane)
constexpr int kSplitAlign = 64;  // keys per split: a multiple of this
constexpr int kMaxGroup = 8;     // query heads per kv head

// Cache readers, one per element type: eight consecutive values of a head from e0 (a multiple
// of 8, so they lie in one block and one nibble half of Q4_0; f16: one 16-byte load), and one value.
template <TensorType T>
__device__ __forceinline__ void load8(const uint8_t* head, int e0, float* out) {
  if constexpr (T == TensorType::F16) {
    const uint4 u = *reinterpret_cast<const uint4*>(head + 2 * e0);
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __half22float2(h[e]);
      out[2 * e] = f.x;
      out[2 * e + 1] = f.y;
    }
  } else if constexpr (T == TensorType::Q8_0) {
    const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(head)[e0 / kQK];
    const float d = kvq::from_fp16_bits(b.d);
    const int j = e0 % kQK;
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = d * static_cast<float>(b.qs[j + e]);
  } else {
    static_assert(T == TensorType::Q4_0, "KV cache type: F16, Q8_0 or Q4_0");
    const BlockQ4_0& b = reinterpret_cast<const BlockQ4_0*>(head)[e0 / kQK];
    const float d = kvq::from_fp16_bits(b.d);
    const int j = e0 % kQK;
    const int shift = j < kQK / 2 ? 0 : 4;
    const int j0 = j % (kQK / 2);
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = d * static_cast<float>(((b.qs[j0 + e] >> shift) & 0xF) - 8);
  }
}

template <TensorType T>
__device__ __forceinline__ float load_value(const uint8_t* head, int i) {
  if constexpr (T == TensorType::F16) {
    return __half2float(reinterpret_cast<const __half*>(head)[i]);
  } else if constexpr (T == TensorType::Q8_0) {
    const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(head)[i / kQK];
    return kvq::from_fp16_bits(b.d) * static_cast<float>(b.qs[i % kQK]);
  } else {
    static_assert(T == TensorType::Q4_0, "KV cache type: F16, Q8_0 or Q4_0");
    const BlockQ4_0& b = reinterpret_cast<const BlockQ4_0*>(head)[i / kQK];
    const int j = i % kQK;
    const int q = j < kQK / 2 ? (b.qs[j] & 0xF) : (b.qs[j - kQK / 2] >> 4);
    return kvq::from_fp16_bits(b.d) * static_cast<float>(q - 8);
  }
}

// Shared memory of the split kernel: tiles of kTile key rows and value rows (kBuffers of them),
// the group's queries and the tile's scores. A key row is padded by 16 bytes: the 32 lanes of a
// warp read 32 different rows at the same column, and the pad puts eight consecutive rows'
// 16-byte pieces in different banks. Values are read a row at a time by all threads, so their
// rows need no pad.
template <int D, TensorType KT, TensorType VT>
struct SplitSmem {
  static constexpr int kKBytes = static_cast<int>(kvq::head_bytes(KT, D));
  static constexpr int kVBytes = static_cast<int>(kvq::head_bytes(VT, D));
  static constexpr int kKRow = (kKBytes + 15) / 16 * 16 + 16, kVRow = (kVBytes + 15) / 16 * 16;
  // Copy unit: f16 heads are 16-byte aligned; heads of 34-byte Q8_0 / 18-byte Q4_0 blocks 4-byte
  // aligned for an even block count (D = 64, 128, 256), else 2 (D = 96: plain copies, cp.async
  // moves 4 bytes at least).
  static constexpr int unit(TensorType t, int bytes) { return t == TensorType::F16 ? 16 : bytes % 4 == 0 ? 4 : 2; }
  static constexpr int kKUnit = unit(KT, kKBytes), kVUnit = unit(VT, kVBytes);
  static_assert(kKBytes % kKUnit == 0 && kVBytes % kVUnit == 0, "cache heads are whole copy units");
  // Tiles in flight: two (the next loads while this one is computed), or one for 512-wide heads,
  // whose two would take 146 KB: more than the 99 KB a block may have on sm_86/89 (24 GB cards).
  static constexpr int kBuffers = D > 256 ? 1 : 2;
  static constexpr int kK = 0, kV = kK + kBuffers * kTile * kKRow, kQ = kV + kBuffers * kTile * kVRow;
  static constexpr int kSc = kQ + kMaxGroup * D * 4;
  static constexpr int kBytes = kSc + kTile * kMaxGroup * 4;
};

// Issues the copies of cache rows [tile0, tile0 + nt) (kBytes of this head in each row of
// row_bytes; ring position p % n_ctx) into shared rows of kRow bytes, kUnit bytes a copy
// (asynchronous for 4 and 16).
template <int kBytes, int kRow, int kUnit>
__device__ __forceinline__ void copy_rows(uint8_t* dst, const uint8_t* src, int64_t row_bytes, int tile0, int nt,
                                          int n_ctx) {
  constexpr int kChunks = kBytes / kUnit;
  for (int i = threadIdx.x; i < nt * kChunks; i += kThreads) {
    const int kk = i / kChunks, c = i % kChunks;
    const uint8_t* from = src + static_cast<int64_t>((tile0 + kk) % n_ctx) * row_bytes + c * kUnit;
    if constexpr (kUnit == 16) {
      cp16(dst + kk * kRow + 16 * c, from);
    } else if constexpr (kUnit == 4) {
      cp4(dst + kk * kRow + 4 * c, from);
    } else {
      *reinterpret_cast<uint16_t*>(dst + kk * kRow + 2 * c) = *reinterpret_cast<const uint16_t*>(from);
    }
  }
}

// Issues the copies of the key and value rows of keys [tile0, tile0 + nt) into one buffer.
template <int D, TensorType KT, TensorType VT>
__device__ __forceinline__ void load_tile(uint8_t* smem, int buf, const uint8_t* kc, const uint8_t* vc, int64_t k_row,
                                          int64_t v_row, int tile0, int nt, int n_ctx) {
  using L = SplitSmem<D, KT, VT>;
  copy_rows<L::kKBytes, L::kKRow, L::kKUnit>(smem + L::kK + buf * kTile * L::kKRow, kc, k_row, tile0, nt, n_ctx);
  copy_rows<L::kVBytes, L::kVRow, L::kVUnit>(smem + L::kV + buf * kTile * L::kVRow, vc, v_row, tile0, nt, n_ctx);
}

// Block (kv head g, split s, token t): all query heads of the group over the split's keys, in
// tiles of kTile (= 32) keys staged in shared memory. Scores: lane = key, warp = a quarter of the
// group's heads, each thread a whole dot product (no shuffles). Softmax: one warp per head, one
// key per lane. Values: thread = output column(s) d of some heads (D = 64: two head halves).
template <int D, TensorType KT, TensorType VT>
__global__ void __launch_bounds__(kThreads) attention_split_kernel(AttentionArgs a) {
  using L = SplitSmem<D, KT, VT>;
  static_assert(kTile == 32 && kThreads == 4 * 32, "one key per lane, four warps");
  static_assert(D % 32 == 0 && (D < kThreads || D % kThreads == 0), "head sizes: 64, 96, 128, 256, 512");
  constexpr int kHS = D >= kThreads ? 1 : kThreads / D;   // head stride of the value phase
  constexpr int kCols = D >= kThreads ? D / kThreads : 1;  // columns per thread
  constexpr int kHeads = (kMaxGroup + kHS - 1) / kHS;      // heads per thread (value phase)
  constexpr int kSHeads = (kMaxGroup + kWarps - 1) / kWarps;  // heads per thread (score phase)
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float m_run[kMaxGroup], l_run[kMaxGroup], alpha[kMaxGroup];
  float* qs = reinterpret_cast<float*>(smem + L::kQ);
  float* sc = reinterpret_cast<float*>(smem + L::kSc);  // [kTile][kMaxGroup]

  grid_dependency_wait();
  const int g = blockIdx.x, split = blockIdx.y, t = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = a.n_head / a.n_head_kv;
  const int p = a.pos[t];
  const auto [k0, k1] = split_keys(a, p, split);
  const int n_tiles = k1 > k0 ? (k1 - k0 + kTile - 1) / kTile : 0;

  // Bytes: rows of n_head_kv heads; this block's kv head g in each.
  const int64_t k_row = static_cast<int64_t>(a.n_head_kv) * L::kKBytes, v_row = static_cast<int64_t>(a.n_head_kv) * L::kVBytes;
  const uint8_t* kc = cache_head(a.k_cache, a, t, p, g, L::kKBytes);
  const uint8_t* vc = cache_head(a.v_cache, a, t, p, g, L::kVBytes);
  if (n_tiles > 0) load_tile<D, KT, VT>(smem, 0, kc, vc, k_row, v_row, k0, min(kTile, k1 - k0), a.n_ctx);
  cp_commit();

  for (int i = tid; i < G * D; i += kThreads) {
    const int gi = i / D, d = i % D;
    qs[i] = p >= 0 ? a.q[t * a.q_stride + (g * G + gi) * D + d] * a.scale : 0.0f;
  }
  if (tid < kMaxGroup) {
    m_run[tid] = -INFINITY;
    l_run[tid] = 0.0f;
  }
  const int dcol = tid % (D < kThreads ? D : kThreads), hs = D >= kThreads ? 0 : tid / D;
  // D = 96: threads 96..127 own no column (kHS * D < kThreads).
  const bool owns_column = D >= kThreads || tid < kHS * D;
  float acc[kCols][kHeads];
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int h = 0; h < kHeads; ++h) acc[c][h] = 0.0f;

  constexpr bool kDouble = L::kBuffers == 2;
  for (int it = 0; it < n_tiles; ++it) {
    const int tile0 = k0 + it * kTile, nt = min(kTile, k1 - tile0), buf = kDouble ? it & 1 : 0;
    if (kDouble && it + 1 < n_tiles) {
      load_tile<D, KT, VT>(smem, buf ^ 1, kc, vc, k_row, v_row, tile0 + kTile, min(kTile, k1 - tile0 - kTile), a.n_ctx);
    }
    cp_commit();
    if constexpr (kDouble) cp_wait<1>();
    else cp_wait<0>();
    __syncthreads();  // this tile (and the queries) visible to all threads
    const uint8_t* ks = smem + L::kK + buf * kTile * L::kKRow;
    const uint8_t* vs = smem + L::kV + buf * kTile * L::kVRow;
    // Scores.
    if (lane < nt) {
      float dot[kSHeads];
#pragma unroll
      for (int r = 0; r < kSHeads; ++r) dot[r] = 0.0f;
      const uint8_t* row = ks + lane * L::kKRow;
#pragma unroll 4
      for (int d0 = 0; d0 < D; d0 += 8) {
        float kv[8];
        load8<KT>(row, d0, kv);
#pragma unroll
        for (int r = 0; r < kSHeads; ++r) {
          const int gi = warp + r * kWarps;
          if (gi < G) {
            const float4 q0 = *reinterpret_cast<const float4*>(qs + gi * D + d0);
            const float4 q1 = *reinterpret_cast<const float4*>(qs + gi * D + d0 + 4);
            dot[r] = fmaf(q0.x, kv[0], fmaf(q0.y, kv[1], fmaf(q0.z, kv[2], fmaf(q0.w, kv[3], dot[r]))));
            dot[r] = fmaf(q1.x, kv[4], fmaf(q1.y, kv[5], fmaf(q1.z, kv[6], fmaf(q1.w, kv[7], dot[r]))));
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kSHeads; ++r) {
        const int gi = warp + r * kWarps;
        if (gi < G) sc[lane * kMaxGroup + gi] = dot[r];
      }
    }
    __syncthreads();
    // Online softmax update: one warp per head, one key per lane.
    for (int gi = warp; gi < G; gi += kWarps) {
      const float x = lane < nt ? sc[lane * kMaxGroup + gi] : -INFINITY;
      const float m_old = m_run[gi];
      const float m_new = fmaxf(m_old, warp_max(x));
      const float e = lane < nt ? __expf(x - m_new) : 0.0f;
      const float sum = warp_sum(e);
      if (lane < nt) sc[lane * kMaxGroup + gi] = e;
      if (lane == 0) {
        const float al = m_old == -INFINITY ? 0.0f : __expf(m_old - m_new);
        alpha[gi] = al;
        l_run[gi] = l_run[gi] * al + sum;
        m_run[gi] = m_new;
      }
    }
    __syncthreads();
    // Values.
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      const int gi = hs + h * kHS;
      if (gi < G) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[c][h] *= alpha[gi];
      }
    }
    for (int kk = 0; owns_column && kk < nt; ++kk) {
      float v[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) v[c] = load_value<VT>(vs + kk * L::kVRow, dcol + c * kThreads);
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        const int gi = hs + h * kHS;
        if (gi < G) {
          const float w = sc[kk * kMaxGroup + gi];
#pragma unroll
          for (int c = 0; c < kCols; ++c) acc[c][h] = fmaf(w, v[c], acc[c][h]);
        }
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's copies
    if (!kDouble && it + 1 < n_tiles) {  // one buffer: the next tile loads only now
      load_tile<D, KT, VT>(smem, 0, kc, vc, k_row, v_row, tile0 + kTile, min(kTile, k1 - tile0 - kTile), a.n_ctx);
    }
  }
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
    const int gi = hs + h * kHS;
    if (owns_column && gi < G) {
      float* po = partial_o(a, t, g * G + gi) + split * D;
#pragma unroll
      for (int c = 0; c < kCols; ++c) po[dcol + c * kThreads] = acc[c][h];
    }
  }
  if (tid < G) {
    float* ml = partial_ml(a, t, g * G + tid) + split * 2;
    ml[0] = m_run[tid];
    ml[1] = l_run[tid];
  }
}

// Block (head h, token t), D threads: merges the splits. The (m, l) pairs go to shared memory
// first, loaded by all threads at once: read from global memory inside the merge loops, each
// split's pair was a load the next iteration waited on, S of them in a row, twice.
__global__ void attention_combine_kernel(AttentionArgs a) {
  extern __shared__ float ml[];  // [S][2]
  grid_dependency_wait();
  const int h = blockIdx.x, t = blockIdx.y, d = threadIdx.x, D = a.head_dim, S = a.n_splits;
  const float* po = partial_o(a, t, h);
  const float* pml = partial_ml(a, t, h);
  for (int i = d; i < 2 * S; i += D) ml[i] = pml[i];
  __syncthreads();
  // Head h's sink is one more logit without a value: it enters the maximum and, once, the
  // denominator (kernels/cpu/attention.cpp).
  const float sink = a.sinks ? a.sinks[h] : -INFINITY;
  float M = sink;
  for (int s = 0; s < S; ++s)
    if (ml[2 * s + 1] > 0.0f) M = fmaxf(M, ml[2 * s]);
  float num = 0.0f, den = sink > -INFINITY ? __expf(sink - M) : 0.0f;
#pragma unroll 4
  for (int s = 0; s < S; ++s) {
    const float l = ml[2 * s + 1];
    const float w = l > 0.0f ? __expf(ml[2 * s] - M) : 0.0f;
    const float o = l > 0.0f ? po[s * D + d] : 0.0f;
    num += w * o;
    den += w * l;
  }
  const float v = den > 0.0f ? num / den : 0.0f;
  const int64_t i = t * a.out_stride + h * D + d;
  a.out[i] = v;
  if (a.xq) {  // the arithmetic of rmsnorm_convert: one 32-value block per warp
    const float amax = warp_max(fabsf(v));
    const float qd = amax / 127.0f;
    const int q = qd > 0.0f ? __float2int_rn(v / qd) : 0;
    const float sum = qd * warp_sum(static_cast<float>(q));
    a.xq[i] = static_cast<int8_t>(q);
    if ((d & 31) == 0) a.xds[i / 32] = make_float2(qd, sum);
  }
}

// The split kernel for the cache's (K, V) types: every pair of f16 / q8_0 / q4_0.
template <int D, TensorType KT, TensorType VT>
void launch_split_kv(const AttentionArgs& a, dim3 grid, const Launch& s) {
  auto* k = attention_split_kernel<D, KT, VT>;
  constexpr int kSmem = SplitSmem<D, KT, VT>::kBytes;
  if (kSmem > 48 * 1024) PIPELLM_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  launch_kernel(s, k, LaunchShape{grid, dim3(kThreads), kSmem}, a);
}

template <int D, TensorType KT>
void launch_split_v(const AttentionArgs& a, dim3 grid, const Launch& s) {
  switch (a.v_type) {
    case TensorType::F16: launch_split_kv<D, KT, TensorType::F16>(a, grid, s); return;
    case TensorType::Q8_0: launch_split_kv<D, KT, TensorType::Q8_0>(a, grid, s); return;
    case TensorType::Q4_0: launch_split_kv<D, KT, TensorType::Q4_0>(a, grid, s); return;
    default: break;
  }
  throw Error(std::string("attention: V cache type ") + tensor_type_name(a.v_type) +
              " unsupported (f16, q8_0, q4_0)");
}

template <int D>
void launch_split(const AttentionArgs& a, dim3 grid, const Launch& s) {
  switch (a.k_type) {
    case TensorType::F16: launch_split_v<D, TensorType::F16>(a, grid, s); return;
    case TensorType::Q8_0: launch_split_v<D, TensorType::Q8_0>(a, grid, s); return;
    case TensorType::Q4_0: launch_split_v<D, TensorType::Q4_0>(a, grid, s); return;
    default: break;
  }
  throw Error(std::string("attention: K cache type ") + tensor_type_name(a.k_type) +
              " unsupported (f16, q8_0, q4_0)");
}

// The CUDA-core split kernel for a's head size.
void launch_split_any(const AttentionArgs& a, dim3 grid, const Launch& s) {
  switch (a.head_dim) {
    case 64: launch_split<64>(a, grid, s); break;
    case 96: launch_split<96>(a, grid, s); break;  // Phi-3/3.5-mini
    case 128: launch_split<128>(a, grid, s); break;
    case 256: launch_split<256>(a, grid, s); break;
    case 512: launch_split<512>(a, grid, s); break;  // Gemma 4's global layers (one 83 KB tile in flight)
    default: throw Error("attention: head_dim " + std::to_string(a.head_dim) + " unsupported (64, 96, 128, 256, 512)");
  }
  PIPELLM_CUDA_LAUNCH_CHECK("attention_split");
}

}  // namespace

int64_t attention_scratch_floats(int n_tokens, int n_head, int head_dim, int n_splits) {
  return static_cast<int64_t>(n_tokens) * n_head * n_splits * (head_dim + 2);
}

void attention_split(int n_keys_max, int n_tokens, int n_head_kv, int target_blocks, int* n_splits,
                     int* keys_per_split) {
  n_keys_max = std::max(n_keys_max, 1);
  const int per_token = std::max(1, target_blocks / std::max(1, n_tokens * n_head_kv));
  int s = std::min(per_token, (n_keys_max + kSplitAlign - 1) / kSplitAlign);
  s = std::max(s, 1);
  int kps = (n_keys_max + s - 1) / s;
  kps = (kps + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
  s = (n_keys_max + kps - 1) / kps;
  *n_splits = s;
  *keys_per_split = kps;
}

void attention(const AttentionArgs& a, const Launch& s) {
  if (a.n_tokens == 0) return;
  if (a.xq && (a.out_stride % 32 != 0 || a.xds == nullptr))
    throw Error("attention: 8-bit outputs need xds and a row stride that is a multiple of 32, not " +
                std::to_string(a.out_stride));
  const int G = a.n_head_kv > 0 ? a.n_head / a.n_head_kv : 0;
  if (G < 1 || G > kMaxGroup || a.n_head % a.n_head_kv != 0)
    throw Error("attention: " + std::to_string(a.n_head) + " heads over " + std::to_string(a.n_head_kv) +
                " kv heads unsupported (group of 1.." + std::to_string(kMaxGroup) + ")");
  const dim3 grid(static_cast<unsigned>(a.n_head_kv), static_cast<unsigned>(a.n_splits),
                  static_cast<unsigned>(a.n_tokens));
  if (a.tokens_per_block < 1 || (a.tokens_per_block > 1 && a.tokens_per_block > attention_tokens_per_block(a)))
    throw Error("attention: " + std::to_string(a.tokens_per_block) + " tokens per block (at most " +
                std::to_string(attention_tokens_per_block(a)) + " for these heads, with tensor cores and one split)");
  if (a.tensor_cores && attention_mma_supports(a)) {
    attention_mma_split(a, s);
  } else {
    launch_split_any(a, grid, s);
  }
  launch_kernel(s, attention_combine_kernel,
                LaunchShape{dim3(static_cast<unsigned>(a.n_head), static_cast<unsigned>(a.n_tokens)),
                            dim3(static_cast<unsigned>(a.head_dim)), 2 * a.n_splits * sizeof(float)},
                a);
  PIPELLM_CUDA_LAUNCH_CHECK("attention_combine");
}

}  // namespace pipellm::cuda

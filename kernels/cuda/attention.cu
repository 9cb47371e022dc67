#include "kernels/cuda/attention.h"

#include <algorithm>
#include <string>

#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/kv_quant.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 64;     // keys per online-softmax step
constexpr int kMaxGroup = 8;  // query heads per kv head

// Cache readers, one per element type: N consecutive values of a head from e0 (N divides 32
// and e0 is a multiple of N, so they lie in one block and one nibble half of Q4_0), and one value.
template <TensorType T, int N>
__device__ __forceinline__ void load_values(const uint8_t* head, int e0, float* out) {
  if constexpr (T == TensorType::F16) {
    const __half* h = reinterpret_cast<const __half*>(head) + e0;
#pragma unroll
    for (int e = 0; e < N; e += 2) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(h + e));
      out[e] = f.x;
      out[e + 1] = f.y;
    }
  } else if constexpr (T == TensorType::Q8_0) {
    const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(head)[e0 / kQK];
    const float d = kvq::from_fp16_bits(b.d);
    const int j = e0 % kQK;
#pragma unroll
    for (int e = 0; e < N; ++e) out[e] = d * static_cast<float>(b.qs[j + e]);
  } else {
    static_assert(T == TensorType::Q4_0, "KV cache type: F16, Q8_0 or Q4_0");
    const BlockQ4_0& b = reinterpret_cast<const BlockQ4_0*>(head)[e0 / kQK];
    const float d = kvq::from_fp16_bits(b.d);
    const int j = e0 % kQK;
    const int shift = j < kQK / 2 ? 0 : 4;
    const int j0 = j % (kQK / 2);
#pragma unroll
    for (int e = 0; e < N; ++e) out[e] = d * static_cast<float>(((b.qs[j0 + e] >> shift) & 0xF) - 8);
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

// Block (kv head g, split s, token t). Threads own output columns d = tid % D of heads
// gi = tid / D + r * (kThreads / D), r < kMaxGroup * D / kThreads.
template <int D, TensorType KT, TensorType VT>
__global__ void __launch_bounds__(kThreads) attention_split_kernel(AttentionArgs a) {
  grid_dependency_wait();
  constexpr int kEpl = D / 32;  // elements per lane in a key row
  constexpr int kHeadStride = kThreads / D > 0 ? kThreads / D : 1;
  constexpr int kR = D > kThreads ? 2 * kMaxGroup : (kMaxGroup + kHeadStride - 1) / kHeadStride;
  const int g = blockIdx.x, split = blockIdx.y, t = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = a.n_head / a.n_head_kv;
  const int S = a.n_splits;
  const int p = a.pos[t];
  const int n_keys = p + 1;  // 0 for padding
  // Splits count from the first key the token sees (the window's start): a split past the end
  // is empty (m = -inf, l = 0) and the merge skips it. So splits sized for all n_ctx keys (one
  // CUDA graph per context bucket) stay correct, and splits sized for just the window suffice.
  const int lo = a.window > 0 ? max(0, n_keys - a.window) : 0;
  const int k0 = lo + split * a.keys_per_split;
  const int k1 = min(n_keys, k0 + a.keys_per_split);

  __shared__ float qs[kMaxGroup][D];
  __shared__ float sc[kMaxGroup][kTile];
  __shared__ float m_run[kMaxGroup], l_run[kMaxGroup], alpha[kMaxGroup];

  for (int i = tid; i < G * D; i += kThreads) {
    const int gi = i / D, d = i % D;
    qs[gi][d] = p >= 0 ? a.q[t * a.q_stride + (g * G + gi) * D + d] * a.scale : 0.0f;
  }
  if (tid < kMaxGroup) {
    m_run[tid] = -INFINITY;
    l_run[tid] = 0.0f;
  }
  float acc[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) acc[r] = 0.0f;
  const int dcol = D > kThreads ? 0 : tid % D;
  // Bytes: rows of n_head_kv heads; this block's kv head g in each.
  const int64_t k_head = kvq::head_bytes(KT, D), v_head = kvq::head_bytes(VT, D);
  const int64_t k_row = a.n_head_kv * k_head, v_row = a.n_head_kv * v_head;
  const int64_t slot_rows = p >= 0 ? static_cast<int64_t>(a.slot[t]) * a.n_ctx : 0;
  const uint8_t* kc = static_cast<const uint8_t*>(a.k_cache) + slot_rows * k_row + g * k_head;
  const uint8_t* vc = static_cast<const uint8_t*>(a.v_cache) + slot_rows * v_row + g * v_head;
  __syncthreads();

  for (int tile0 = k0; tile0 < k1; tile0 += kTile) {
    const int nt = min(kTile, k1 - tile0);
    // Scores: one warp per key, lanes split the head dimension.
    for (int kk = warp; kk < nt; kk += kWarps) {
      float kv[kEpl];
      load_values<KT, kEpl>(kc + static_cast<int64_t>((tile0 + kk) % a.n_ctx) * k_row, lane * kEpl, kv);
      for (int gi = 0; gi < G; ++gi) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < kEpl; ++e) dot += qs[gi][lane * kEpl + e] * kv[e];
        dot = warp_sum(dot);
        if (lane == 0) sc[gi][kk] = dot;
      }
    }
    __syncthreads();
    // Online softmax update: one warp per head.
    for (int gi = warp; gi < G; gi += kWarps) {
      float mx = -INFINITY;
      for (int kk = lane; kk < nt; kk += 32) mx = fmaxf(mx, sc[gi][kk]);
      mx = warp_max(mx);
      const float m_old = m_run[gi];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int kk = lane; kk < nt; kk += 32) {
        const float e = __expf(sc[gi][kk] - m_new);
        sc[gi][kk] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float al = m_old == -INFINITY ? 0.0f : __expf(m_old - m_new);
        alpha[gi] = al;
        l_run[gi] = l_run[gi] * al + sum;
        m_run[gi] = m_new;
      }
    }
    __syncthreads();
    // Output accumulation.
    if (D > kThreads) {
      // D = 256: each thread owns columns tid and tid + 128 of every head.
      for (int r = 0; r < kR; ++r) {
        const int gi = r >> 1, d = tid + (r & 1) * kThreads;
        if (gi < G) {
          float v = acc[r] * alpha[gi];
          for (int kk = 0; kk < nt; ++kk)
            v += sc[gi][kk] * load_value<VT>(vc + static_cast<int64_t>((tile0 + kk) % a.n_ctx) * v_row, d);
          acc[r] = v;
        }
      }
    } else {
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const int gi = tid / D + r * kHeadStride;
        if (gi < G) acc[r] *= alpha[gi];
      }
      for (int kk = 0; kk < nt; ++kk) {
        const float vv = load_value<VT>(vc + static_cast<int64_t>((tile0 + kk) % a.n_ctx) * v_row, dcol);
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          const int gi = tid / D + r * kHeadStride;
          if (gi < G) acc[r] += sc[gi][kk] * vv;
        }
      }
    }
    __syncthreads();
  }
  // Partial results: o [T][H][S][D], then (m, l) [T][H][S][2].
  float* po = a.partial;
  float* pml = a.partial + static_cast<int64_t>(a.n_tokens) * a.n_head * S * D;
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    int gi, d;
    if (D > kThreads) {
      gi = r >> 1;
      d = tid + (r & 1) * kThreads;
    } else {
      gi = tid / D + r * kHeadStride;
      d = dcol;
    }
    if (gi < G) po[((static_cast<int64_t>(t) * a.n_head + g * G + gi) * S + split) * D + d] = acc[r];
  }
  if (tid < G) {
    float* ml = pml + ((static_cast<int64_t>(t) * a.n_head + g * G + tid) * S + split) * 2;
    ml[0] = m_run[tid];
    ml[1] = l_run[tid];
  }
}

// Block (head h, token t), D threads: merges the splits.
__global__ void attention_combine_kernel(AttentionArgs a) {
  grid_dependency_wait();
  const int h = blockIdx.x, t = blockIdx.y, d = threadIdx.x, D = a.head_dim, S = a.n_splits;
  const float* po = a.partial + (static_cast<int64_t>(t) * a.n_head + h) * S * D;
  const float* pml =
      a.partial + static_cast<int64_t>(a.n_tokens) * a.n_head * S * D + (static_cast<int64_t>(t) * a.n_head + h) * S * 2;
  // Head h's sink is one more logit without a value: it enters the maximum and, once, the
  // denominator (kernels/cpu/attention.cpp).
  const float sink = a.sinks ? a.sinks[h] : -INFINITY;
  float M = sink;
  for (int s = 0; s < S; ++s)
    if (pml[2 * s + 1] > 0.0f) M = fmaxf(M, pml[2 * s]);
  float num = 0.0f, den = sink > -INFINITY ? __expf(sink - M) : 0.0f;
  for (int s = 0; s < S; ++s) {
    const float l = pml[2 * s + 1];
    if (l > 0.0f) {
      const float w = __expf(pml[2 * s] - M);
      num += w * po[s * D + d];
      den += w * l;
    }
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
template <int D, TensorType KT>
void launch_split_v(const AttentionArgs& a, dim3 grid, const Launch& s) {
  const dim3 block(kThreads);
  switch (a.v_type) {
    case TensorType::F16: launch_kernel(s, attention_split_kernel<D, KT, TensorType::F16>, grid, block, a); return;
    case TensorType::Q8_0: launch_kernel(s, attention_split_kernel<D, KT, TensorType::Q8_0>, grid, block, a); return;
    case TensorType::Q4_0: launch_kernel(s, attention_split_kernel<D, KT, TensorType::Q4_0>, grid, block, a); return;
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

}  // namespace

int64_t attention_scratch_floats(int n_tokens, int n_head, int head_dim, int n_splits) {
  return static_cast<int64_t>(n_tokens) * n_head * n_splits * (head_dim + 2);
}

void attention_split(int n_keys_max, int n_tokens, int n_head_kv, int target_blocks, int* n_splits,
                     int* keys_per_split) {
  n_keys_max = std::max(n_keys_max, 1);
  const int per_token = std::max(1, target_blocks / std::max(1, n_tokens * n_head_kv));
  int s = std::min(per_token, (n_keys_max + kTile - 1) / kTile);
  s = std::max(s, 1);
  int kps = (n_keys_max + s - 1) / s;
  kps = (kps + kTile - 1) / kTile * kTile;
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
  switch (a.head_dim) {
    case 64: launch_split<64>(a, grid, s); break;
    case 128: launch_split<128>(a, grid, s); break;
    case 256: launch_split<256>(a, grid, s); break;
    default: throw Error("attention: head_dim " + std::to_string(a.head_dim) + " unsupported (64, 128, 256)");
  }
  PIPELLM_CUDA_LAUNCH_CHECK("attention_split");
  launch_kernel(s, attention_combine_kernel, dim3(static_cast<unsigned>(a.n_head), static_cast<unsigned>(a.n_tokens)),
                dim3(static_cast<unsigned>(a.head_dim)), a);
  PIPELLM_CUDA_LAUNCH_CHECK("attention_combine");
}

}  // namespace pipellm::cuda

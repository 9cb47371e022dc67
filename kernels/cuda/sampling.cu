#include "kernels/cuda/sampling.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

struct Best {
  float v;
  int32_t i;
};

__device__ __forceinline__ Best better(Best a, Best b) {
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

__device__ Best block_argmax(Best b, Best* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
    b = better(b, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = b;
  __syncthreads();
  b = lane < kWarps ? red[lane] : Best{-INFINITY, 0x7fffffff};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
    b = better(b, other);
  }
  return b;
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* logits, int64_t stride, int64_t n, int32_t* out) {
  grid_dependency_wait();
  const float* row = logits + blockIdx.x * stride;
  __shared__ Best red[kWarps];
  Best b{-INFINITY, 0x7fffffff};
  for (int64_t i = threadIdx.x; i < n; i += kThreads) b = better(b, Best{row[i], static_cast<int32_t>(i)});
  b = block_argmax(b, red);
  if (threadIdx.x == 0) out[blockIdx.x] = b.i == 0x7fffffff ? 0 : b.i;
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Sum over the block of f(i) for i < n.
template <class F>
__device__ float block_reduce_sum(int64_t n, F f, float* red) {
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += f(i);
  return block_sum<kThreads>(s, red);
}

// Keeps tokens with logit >= threshold; the threshold is found by bisection on the logit value
// so that the kept set satisfies top_k, top_p and min_p (no sort).
__global__ void __launch_bounds__(kThreads) sample_kernel(const float* logits, int64_t stride, int64_t n,
                                                          SamplingParams p, uint64_t* counter, int32_t* out) {
  grid_dependency_wait();
  const float* row = logits + blockIdx.x * stride;
  __shared__ Best redb[kWarps];
  __shared__ float red[kWarps];
  Best b{-INFINITY, 0x7fffffff};
  for (int64_t i = threadIdx.x; i < n; i += kThreads) b = better(b, Best{row[i], static_cast<int32_t>(i)});
  b = block_argmax(b, redb);
  const float inv_t = 1.0f / p.temperature;
  const float tf = p.temperature_last ? 1.0f : p.temperature;  // the filters' temperature
  const float inv_tf = 1.0f / tf;
  const float mx = b.v;
  auto prob = [&](int64_t i) { return __expf((row[i] - mx) * inv_t); };
  auto prob_f = [&](int64_t i) { return __expf((row[i] - mx) * inv_tf); };
  // Lowest logit kept: start with everything, raise it while a constraint is violated.
  float lo = -INFINITY;
  // min_p: p_i >= min_p * p_max  <=>  logit >= mx + T * log(min_p).
  if (p.min_p > 0.0f) lo = mx + tf * __logf(p.min_p);
  // top_k: the smallest threshold keeping at most top_k tokens (bisection on the logit value).
  float mn_local = INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) mn_local = fminf(mn_local, row[i]);
  const float mn = -block_max<kThreads>(-mn_local, red);
  if (p.top_k > 0 && p.top_k < n) {
    float a = mn, c = mx;
    for (int it = 0; it < 48; ++it) {
      const float mid = 0.5f * (a + c);
      const float cnt = block_reduce_sum(n, [&](int64_t i) { return row[i] >= mid ? 1.0f : 0.0f; }, red);
      if (cnt > static_cast<float>(p.top_k)) a = mid;
      else c = mid;
    }
    lo = fmaxf(lo, c);
  }
  // top_p: the largest threshold whose kept mass is at least top_p of the mass kept so far.
  if (p.top_p < 1.0f) {
    const float lo_k = lo;
    const float target =
        p.top_p * block_reduce_sum(n, [&](int64_t i) { return row[i] >= lo_k ? prob_f(i) : 0.0f; }, red);
    float a = lo_k == -INFINITY ? mn : lo_k, c = mx;
    for (int it = 0; it < 48; ++it) {
      const float mid = 0.5f * (a + c);
      const float mass = block_reduce_sum(n, [&](int64_t i) { return row[i] >= mid ? prob_f(i) : 0.0f; }, red);
      if (mass >= target) a = mid;
      else c = mid;
    }
    lo = fmaxf(lo, a);
  }
  const float kept = block_reduce_sum(n, [&](int64_t i) { return row[i] >= lo ? prob(i) : 0.0f; }, red);
  const uint64_t r = mix64(p.seed ^ mix64(counter[blockIdx.x] * 0x2545f4914f6cdd1dull + blockIdx.x));
  const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f) * kept;
  // Prefix scan in index order, done serially per thread chunk then across threads.
  const int64_t chunk = (n + kThreads - 1) / kThreads;
  const int64_t i0 = threadIdx.x * chunk, i1 = min(n, i0 + chunk);
  float mine = 0.0f;
  for (int64_t i = i0; i < i1; ++i)
    if (row[i] >= lo) mine += prob(i);
  __shared__ float pre[kThreads];
  pre[threadIdx.x] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    float acc = 0.0f;
    for (int k = 0; k < kThreads; ++k) {
      const float v = pre[k];
      pre[k] = acc;
      acc += v;
    }
  }
  __syncthreads();
  __shared__ int32_t pick;
  if (threadIdx.x == 0) pick = b.i;
  __syncthreads();
  float acc = pre[threadIdx.x];
  if (u >= acc && u < acc + mine) {
    int32_t last = -1;
    for (int64_t i = i0; i < i1; ++i) {
      if (row[i] < lo) continue;
      last = static_cast<int32_t>(i);
      acc += prob(i);
      if (u < acc) break;
    }
    if (last >= 0) pick = last;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    out[blockIdx.x] = pick;
    counter[blockIdx.x] += 1;
  }
}

}  // namespace

void argmax_rows(const float* logits, int64_t stride, int n_rows, int64_t n_vocab, int32_t* out, const Launch& s) {
  if (n_rows == 0) return;
  launch_kernel(s, argmax_kernel, dim3(n_rows), dim3(kThreads), logits, stride, n_vocab, out);
  PIPELLM_CUDA_LAUNCH_CHECK("argmax_rows");
}

void sample_rows(const float* logits, int64_t stride, int n_rows, int64_t n_vocab, const SamplingParams& p,
                 uint64_t* counter, int32_t* out, const Launch& s) {
  if (n_rows == 0) return;
  if (p.temperature <= 0.0f) {
    argmax_rows(logits, stride, n_rows, n_vocab, out, s);
    return;
  }
  launch_kernel(s, sample_kernel, dim3(n_rows), dim3(kThreads), logits, stride, n_vocab, p, counter, out);
  PIPELLM_CUDA_LAUNCH_CHECK("sample_rows");
}

}  // namespace pipellm::cuda

#include "kernels/cuda/sampling.h"

#include <math_constants.h>

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
__global__ void __launch_bounds__(kThreads) sample_kernel(SampleRowsArgs a) {
  grid_dependency_wait();
  const int64_t n = a.n_vocab;
  const int32_t pos = a.row_pos[blockIdx.x];
  if (pos < 0) {  // padding row
    if (threadIdx.x == 0) {
      a.out[blockIdx.x] = 0;
      if (a.logprob) a.logprob[blockIdx.x] = CUDART_NAN_F;
    }
    return;
  }
  const int32_t slot = a.row_slot[blockIdx.x];
  const SlotSampling p = a.slots[slot];
  const float* row = a.logits + blockIdx.x * a.stride;
  __shared__ Best redb[kWarps];
  __shared__ float red[kWarps];
  Best b{-INFINITY, 0x7fffffff};
  for (int64_t i = threadIdx.x; i < n; i += kThreads) b = better(b, Best{row[i], static_cast<int32_t>(i)});
  b = block_argmax(b, redb);
  // log(sum exp(row - max)): the chosen token's log-probability is its logit - max - this.
  const float log_z =
      p.logprobs ? __logf(block_reduce_sum(n, [&](int64_t i) { return __expf(row[i] - b.v); }, red)) : 0.0f;
  const auto finish = [&](int32_t pick) {
    a.out[blockIdx.x] = pick;
    if (a.logprob) a.logprob[blockIdx.x] = p.logprobs ? row[pick] - b.v - log_z : CUDART_NAN_F;
  };
  if (p.temperature <= 0.0f) {
    if (threadIdx.x == 0) finish(b.i == 0x7fffffff ? 0 : b.i);
    return;
  }
  const float inv_t = 1.0f / p.temperature;
  const float tf = p.temperature_last ? 1.0f : p.temperature;  // the filters' temperature
  const float inv_tf = 1.0f / tf;
  const float mx = b.v;
  auto prob = [&](int64_t i) { return __expf((row[i] - mx) * inv_t); };
  auto prob_f = [&](int64_t i) { return __expf((row[i] - mx) * inv_tf); };
  // Lowest logit kept: start with everything, raise it while a constraint is violated, in the
  // chain's order (top_p measures the mass top_k left; min_p comes last).
  float lo = -INFINITY;
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
  // min_p: p_i >= min_p * p_max  <=>  logit >= mx + T * log(min_p).
  if (p.min_p > 0.0f) lo = fmaxf(lo, mx + tf * __logf(p.min_p));
  const float kept = block_reduce_sum(n, [&](int64_t i) { return row[i] >= lo ? prob(i) : 0.0f; }, red);
  const uint64_t r = mix64(p.seed ^ mix64(a.counter[slot] * 0x2545f4914f6cdd1dull + 0x632be59bd9b4e019ull));
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
    finish(pick);
    a.counter[slot] += 1;
  }
}

// One block per row: each distinct token of the window is penalised once, by the thread holding
// its first occurrence (so no two threads touch one logit).
__global__ void penalize_kernel(SampleRowsArgs a) {
  grid_dependency_wait();
  const int32_t pos = a.row_pos[blockIdx.x];
  if (pos < 0) return;
  const int32_t slot = a.row_slot[blockIdx.x];
  const SlotSampling p = a.slots[slot];
  if (p.penalty_last_n <= 0 || (p.repeat_penalty == 1.0f && p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f))
    return;
  const int32_t* hist = a.history + static_cast<int64_t>(slot) * a.n_ctx;
  const int32_t w0 = max(0, pos - p.penalty_last_n + 1);
  float* row = a.logits + blockIdx.x * a.stride;
  for (int32_t i = w0 + static_cast<int32_t>(threadIdx.x); i <= pos; i += blockDim.x) {
    const int32_t t = hist[i];
    if (t < 0 || t >= a.n_vocab) continue;
    bool first = true;
    for (int32_t j = w0; j < i && first; ++j) first = hist[j] != t;
    if (!first) continue;
    int count = 1;
    for (int32_t j = i + 1; j <= pos; ++j) count += hist[j] == t;
    float l = row[t];
    l = l > 0.0f ? l / p.repeat_penalty : l * p.repeat_penalty;
    row[t] = l - static_cast<float>(count) * p.frequency_penalty - p.presence_penalty;
  }
}

__global__ void record_kernel(const int32_t* tokens, const int32_t* pos, const int32_t* slot, int n, int32_t* history,
                              int n_ctx) {
  grid_dependency_wait();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && pos[i] >= 0 && pos[i] < n_ctx) history[static_cast<int64_t>(slot[i]) * n_ctx + pos[i]] = tokens[i];
}

}  // namespace

void record_tokens(const int32_t* tokens, const int32_t* pos, const int32_t* slot, int n, int32_t* history, int n_ctx,
                   const Launch& s) {
  if (n == 0) return;
  launch_kernel(s, record_kernel, dim3((n + 255) / 256), dim3(256), tokens, pos, slot, n, history, n_ctx);
  PIPELLM_CUDA_LAUNCH_CHECK("record_tokens");
}

void sample_rows(const SampleRowsArgs& a, const Launch& s) {
  if (a.n_rows == 0) return;
  launch_kernel(s, penalize_kernel, dim3(a.n_rows), dim3(256), a);
  PIPELLM_CUDA_LAUNCH_CHECK("sample_rows: penalties");
  launch_kernel(s, sample_kernel, dim3(a.n_rows), dim3(kThreads), a);
  PIPELLM_CUDA_LAUNCH_CHECK("sample_rows");
}

}  // namespace pipellm::cuda

#include "kernels/cuda/moe_cache.h"

#include <algorithm>

#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) moe_cache_split_kernel(const int32_t* ids, const float* w,
                                                                  const int32_t* slot_of, int n_expert, int n_pairs,
                                                                  int32_t* gpu_ids, float* gpu_w, int32_t* host_ids) {
  grid_dependency_wait();
  const int p = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= n_pairs) return;
  const int32_t e = ids[p];
  const int32_t s = e >= 0 && e < n_expert ? slot_of[e] : -1;
  gpu_ids[p] = s >= 0 ? s : 0;
  gpu_w[p] = s >= 0 ? w[p] : 0.0f;
  host_ids[p] = s >= 0 || e < 0 || e >= n_expert ? -1 : e;
}

__global__ void __launch_bounds__(kThreads) moe_add_bias_kernel(float* y, const float* bias, const int32_t* ids,
                                                               int64_t n, int64_t total) {
  grid_dependency_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i / n;
    y[i] += bias[static_cast<int64_t>(ids[p]) * n + (i - p * n)];
  }
}

}  // namespace

void moe_cache_split(const int32_t* ids, const float* w, const int32_t* slot_of, int n_expert, int n_pairs,
                     int32_t* gpu_ids, float* gpu_w, int32_t* host_ids, const Launch& s) {
  if (n_pairs <= 0) return;
  launch_kernel(s, moe_cache_split_kernel, dim3((n_pairs + kThreads - 1) / kThreads), dim3(kThreads), ids, w, slot_of,
                n_expert, n_pairs, gpu_ids, gpu_w, host_ids);
}

void moe_add_bias(float* y, const float* bias, const int32_t* ids, int n_pairs, int64_t n, const Launch& s) {
  const int64_t total = static_cast<int64_t>(n_pairs) * n;
  if (total <= 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 4096));
  launch_kernel(s, moe_add_bias_kernel, dim3(blocks), dim3(kThreads), y, bias, ids, n, total);
}

}  // namespace pipellm::cuda

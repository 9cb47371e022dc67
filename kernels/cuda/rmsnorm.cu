#include "kernels/cuda/rmsnorm.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kThreads = 256;

// Grid (ceil(n / kThreads), rows): each block converts kThreads consecutive elements of a row
// (one 32-element activation block per warp); with `normalize`, every block first reduces the
// whole row's sum of squares itself (the row is small and L2-resident), so a row is spread over
// many SMs instead of one.
__global__ void __launch_bounds__(kThreads) rmsnorm_convert_kernel(NormOutArgs a) {
  grid_dependency_wait();
  const int row = blockIdx.y;
  const float* x = a.x + row * a.x_stride;
  __shared__ float red[kThreads / 32];
  float scale = 1.0f;
  if (a.normalize) {
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < a.n; i += kThreads) ss += x[i] * x[i];
    ss = block_sum<kThreads>(ss, red);
    scale = rsqrtf(ss / static_cast<float>(a.n) + a.eps);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads + warp * 32;
  if (base >= a.n) return;  // whole warps only (n is a multiple of 32)
  const int64_t i = base + lane;
  float v = x[i] * scale;
  if (a.w) v *= a.w[i];
  if (a.y_f32) a.y_f32[row * a.n + i] = v;
  if (a.y_f16) a.y_f16[row * a.n + i] = __float2half_rn(v);
  if (a.xq) {
    float2 ds;
    a.xq[row * a.n + i] = quantize_act_block(v, ds);
    if (lane == 0) a.xds[row * (a.n / 32) + base / 32] = ds;
  }
}

__global__ void rmsnorm_rows_kernel(float* x, const float* w, int n, float eps) {
  float* r = x + static_cast<int64_t>(blockIdx.x) * n;
  __shared__ float red[kThreads / 32];
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += kThreads) ss += r[i] * r[i];
  ss = block_sum<kThreads>(ss, red);
  const float scale = rsqrtf(ss / static_cast<float>(n) + eps);
  for (int i = threadIdx.x; i < n; i += kThreads) r[i] = r[i] * scale * (w ? w[i] : 1.0f);
}

}  // namespace

void rmsnorm_convert(const NormOutArgs& a, const Launch& s) {
  if (a.n_rows == 0) return;
  if (a.n % 32 != 0) throw Error("rmsnorm_convert: row length " + std::to_string(a.n) + " is not a multiple of 32");
  const dim3 grid(static_cast<unsigned>((a.n + kThreads - 1) / kThreads), static_cast<unsigned>(a.n_rows));
  launch_kernel(s, rmsnorm_convert_kernel, grid, dim3(kThreads), a);
  PIPELLM_CUDA_LAUNCH_CHECK("rmsnorm_convert");
}

void rmsnorm_rows(float* x, const float* w, int n_rows, int n, float eps, cudaStream_t s) {
  if (n_rows == 0) return;
  rmsnorm_rows_kernel<<<n_rows, kThreads, 0, s>>>(x, w, n, eps);
  PIPELLM_CUDA_LAUNCH_CHECK("rmsnorm_rows");
}

}  // namespace pipellm::cuda

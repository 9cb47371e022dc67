#include "kernels/cuda/layer_ops.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/gated_act.cuh"
#include "kernels/cuda/moe.h"

namespace pipellm::cuda {
namespace {

constexpr int kThreads = 256;

// One kernel for the dense form (g/u rows `stride` apart, out dense) and the per-expert form
// (pairs of dense rows, biases indexed by each pair's expert, out = g): both ops read the same
// activation code, so their results agree bit for bit.
template <GatedAct A>
__global__ void __launch_bounds__(kThreads) gated_kernel(const float* g, const float* u, int64_t stride, int64_t n,
                                                         int64_t total, const int32_t* ids, const float* bias_g,
                                                         const float* bias_u, float* out) {
  grid_dependency_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, c = i - r * n;
    float gv = g[r * stride + c], uv = u[r * stride + c];
    if (ids != nullptr) {
      const int64_t e = ids[r];
      if (bias_g) gv += bias_g[e * n + c];
      if (bias_u) uv += bias_u[e * n + c];
    }
    out[i] = gated<A>(gv, uv);
  }
}

void launch_gated(const char* what, GatedAct act, const float* g, const float* u, int64_t stride, int64_t n,
                  int64_t total, const int32_t* ids, const float* bias_g, const float* bias_u, float* out,
                  const Launch& s) {
  if (total == 0) return;
  const dim3 grid(elementwise_blocks(total)), block(kThreads);
  with_gated_act(act, what, [&](auto a) {
    launch_kernel(s, gated_kernel<decltype(a)::value>, grid, block, g, u, stride, n, total, ids, bias_g, bias_u, out);
  });
  PIPELLM_CUDA_LAUNCH_CHECK(what);
}

// Without a norm: plain elementwise over all rows.
__global__ void __launch_bounds__(kThreads) residual_add_kernel(float* x, int64_t x_stride, const float* y,
                                                                int64_t y_stride, const float* bias, int64_t n,
                                                                int64_t total) {
  grid_dependency_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, c = i - r * n;
    float v = y[r * y_stride + c];
    if (bias) v += bias[c];
    x[r * x_stride + c] += v;
  }
}

// With a norm: grid (ceil(n / kThreads), rows); as rmsnorm_convert, every block reduces the
// whole row's sum of squares itself (a row is small and L2-resident) and then updates its own
// kThreads elements, so one row is spread over many SMs instead of one.
__global__ void __launch_bounds__(kThreads) residual_add_norm_kernel(float* x, int64_t x_stride, const float* y,
                                                                     int64_t y_stride, const float* bias,
                                                                     const float* norm_w, float eps, int64_t n) {
  grid_dependency_wait();
  const int64_t row = blockIdx.y;
  const float* yr = y + row * y_stride;
  __shared__ float red[kThreads / 32];
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = yr[i] + (bias ? bias[i] : 0.0f);
    ss += v * v;
  }
  ss = block_sum<kThreads>(ss, red);
  const float sc = rsqrtf(ss / static_cast<float>(n) + eps);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  const float v = yr[i] + (bias ? bias[i] : 0.0f);
  x[row * x_stride + i] += v * sc * norm_w[i];
}

__global__ void __launch_bounds__(kThreads) add_bias_kernel(float* y, const float* bias, int64_t n, int64_t total) {
  grid_dependency_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += bias[i % n];
}

__global__ void __launch_bounds__(kThreads) softcap_kernel(float* l, int64_t stride, int64_t n, int64_t total,
                                                           float cap) {
  grid_dependency_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, c = i - r * n;
    float* p = l + r * stride + c;
    *p = cap * tanh_exact(__fdiv_rn(*p, cap));  // IEEE division, as the CPU
  }
}

__global__ void __launch_bounds__(kThreads) scale_kernel(float* x, int64_t n, float sc) {
  grid_dependency_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= sc;
}

}  // namespace

void residual_add(float* x, int64_t x_stride, const float* y, int64_t y_stride, const float* bias, const float* norm_w,
                  float eps, int n_rows, int64_t n, const Launch& s) {
  if (n_rows == 0 || n == 0) return;
  if (norm_w == nullptr) {
    const int64_t total = static_cast<int64_t>(n_rows) * n;
    launch_kernel(s, residual_add_kernel, dim3(elementwise_blocks(total)), dim3(kThreads), x, x_stride, y, y_stride,
                  bias, n, total);
    PIPELLM_CUDA_LAUNCH_CHECK("residual_add");
    return;
  }
  if (n_rows > 65535)
    throw Error("residual_add: " + std::to_string(n_rows) + " rows with a norm exceed one launch (65535)");
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), static_cast<unsigned>(n_rows));
  launch_kernel(s, residual_add_norm_kernel, grid, dim3(kThreads), x, x_stride, y, y_stride, bias, norm_w, eps, n);
  PIPELLM_CUDA_LAUNCH_CHECK("residual_add(norm)");
}

void gated_act(GatedAct act, const float* g, const float* u, int64_t stride, int n_rows, int64_t n, float* out,
               const Launch& s) {
  launch_gated("gated_act", act, g, u, stride, n, static_cast<int64_t>(n_rows) * n, nullptr, nullptr, nullptr, out, s);
}

// Defined here rather than in moe.cu so that the dense and the per-expert activation share one
// kernel (no separable compilation: a device function cannot be shared across .cu files).
void moe_gated_act(GatedAct act, float* g, const float* u, const float* bias_g, const float* bias_u, const int32_t* ids,
                   int n_pairs, int64_t n, const Launch& s) {
  launch_gated("moe_gated_act", act, g, u, n, n, static_cast<int64_t>(n_pairs) * n, ids, bias_g, bias_u, g, s);
}

void add_bias(float* y, const float* bias, int n_rows, int64_t n, const Launch& s) {
  const int64_t total = static_cast<int64_t>(n_rows) * n;
  if (total == 0) return;
  launch_kernel(s, add_bias_kernel, dim3(elementwise_blocks(total)), dim3(kThreads), y, bias, n, total);
  PIPELLM_CUDA_LAUNCH_CHECK("add_bias");
}

void softcap(float* logits, int64_t stride, int n_rows, int64_t n, float cap, const Launch& s) {
  const int64_t total = static_cast<int64_t>(n_rows) * n;
  if (total == 0) return;
  if (!(cap > 0.0f)) throw Error("softcap: cap " + std::to_string(cap) + " must be positive");
  launch_kernel(s, softcap_kernel, dim3(elementwise_blocks(total)), dim3(kThreads), logits, stride, n, total, cap);
  PIPELLM_CUDA_LAUNCH_CHECK("softcap");
}

void scale(float* x, int64_t n, float sc, const Launch& s) {
  if (n == 0) return;
  launch_kernel(s, scale_kernel, dim3(elementwise_blocks(n)), dim3(kThreads), x, n, sc);
  PIPELLM_CUDA_LAUNCH_CHECK("scale");
}

}  // namespace pipellm::cuda

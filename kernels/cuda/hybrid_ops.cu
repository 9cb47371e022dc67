#include "kernels/cuda/hybrid_ops.h"

#include <algorithm>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kThreads = 256;

// expf in full precision: --use_fast_math would turn it into an approximation, and these gates
// feed recurrences and residuals.
__device__ __forceinline__ float sigmoid_exact(float x) {
  return static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(x))));
}

#define PIPELLM_GRID_STRIDE(i, total)                                                          \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (total); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void __launch_bounds__(kThreads) delta_gates_kernel(float* g, float* beta, const float* dt_bias,
                                                               const float* a, int64_t total, int n_heads) {
  grid_dependency_wait();
  PIPELLM_GRID_STRIDE(i, total) {
    const int h = static_cast<int>(i % n_heads);
    beta[i] = sigmoid_exact(beta[i]);
    const double u = static_cast<double>(g[i]) + dt_bias[h];
    g[i] = static_cast<float>((u > 20.0 ? u : log1p(exp(u))) * a[h]);
  }
}

// One block per (row, head): the head's sum of squares, then rms * w * silu(z).
__global__ void __launch_bounds__(kThreads) gated_rmsnorm_kernel(float* o, const float* z, const float* w, int n_heads,
                                                                 int head, float eps) {
  grid_dependency_wait();
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * n_heads + blockIdx.y) * head;
  __shared__ float red[kThreads / 32];
  float ss = 0.0f;
  for (int i = threadIdx.x; i < head; i += kThreads) ss += o[base + i] * o[base + i];
  ss = block_sum<kThreads>(ss, red);
  const float sc = static_cast<float>(1.0 / sqrt(static_cast<double>(ss) / head + eps));
  for (int i = threadIdx.x; i < head; i += kThreads) {
    const float zv = z[base + i];
    o[base + i] = o[base + i] * sc * w[i] * zv * sigmoid_exact(zv);
  }
}

__global__ void __launch_bounds__(kThreads) split_gated_q_kernel(const float* src, float* q, float* gate, int64_t total,
                                                                 int head_dim, int64_t qd) {
  grid_dependency_wait();
  PIPELLM_GRID_STRIDE(i, total) {
    const int64_t t = i / qd, c = i - t * qd, h = c / head_dim, d = c - h * head_dim;
    const float* s = src + t * 2 * qd + h * 2 * head_dim;
    q[i] = s[d];
    gate[i] = s[head_dim + d];
  }
}

__global__ void __launch_bounds__(kThreads) sigmoid_mul_kernel(float* x, const float* gate, int64_t n) {
  grid_dependency_wait();
  PIPELLM_GRID_STRIDE(i, n) x[i] *= sigmoid_exact(gate[i]);
}

// One block per row: the dot product, then the scaled add.
__global__ void __launch_bounds__(kThreads) gate_dot_add_kernel(float* x, const float* y, const float* h,
                                                                const float* w, int64_t n) {
  grid_dependency_wait();
  const int64_t r = blockIdx.x;
  __shared__ float red[kThreads / 32];
  float dot = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) dot += w[i] * h[r * n + i];
  dot = block_sum<kThreads>(dot, red);
  const float gv = sigmoid_exact(dot);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) x[r * n + i] += gv * y[r * n + i];
}

// One block per (row, layer): rms of the P-vector, then the combination.
__global__ void __launch_bounds__(kThreads) per_layer_combine_kernel(float* proj, const float* tok, const float* norm_w,
                                                                     int n_layer, int P, float eps) {
  grid_dependency_wait();
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * n_layer + blockIdx.y) * P;
  __shared__ float red[kThreads / 32];
  float ss = 0.0f;
  for (int i = threadIdx.x; i < P; i += kThreads) ss += proj[base + i] * proj[base + i];
  ss = block_sum<kThreads>(ss, red);
  const float sc = static_cast<float>(1.0 / sqrt(static_cast<double>(ss) / P + eps));
  const float sp = sqrtf(static_cast<float>(P)), inv2 = 0.70710678118654752f;
  for (int i = threadIdx.x; i < P; i += kThreads) {
    proj[base + i] = (proj[base + i] * sc * norm_w[i] + tok[base + i] * sp) * inv2;
  }
}

__global__ void __launch_bounds__(kThreads) moe_scale_weights_kernel(float* weights, const int32_t* ids,
                                                                     const float* scale, int64_t n) {
  grid_dependency_wait();
  PIPELLM_GRID_STRIDE(i, n) weights[i] *= scale[ids[i]];
}

#undef PIPELLM_GRID_STRIDE

void check_grid_rows(const char* what, int64_t rows) {
  if (rows > 2147483647) throw Error(std::string(what) + ": " + std::to_string(rows) + " rows exceed one launch");
}

}  // namespace

void delta_gates(float* g, float* beta, const float* dt_bias, const float* a, int64_t n_rows, int n_heads,
                 const Launch& s) {
  const int64_t total = n_rows * n_heads;
  if (total == 0) return;
  launch_kernel(s, delta_gates_kernel, dim3(elementwise_blocks(total)), dim3(kThreads), g, beta, dt_bias, a, total,
                n_heads);
  PIPELLM_CUDA_LAUNCH_CHECK("delta_gates");
}

void gated_rmsnorm(float* o, const float* z, const float* w, int64_t n_rows, int n_heads, int head, float eps,
                   const Launch& s) {
  if (n_rows == 0) return;
  check_grid_rows("gated_rmsnorm", n_rows);
  if (n_heads > 65535) throw Error("gated_rmsnorm: " + std::to_string(n_heads) + " heads exceed one launch");
  launch_kernel(s, gated_rmsnorm_kernel, dim3(static_cast<unsigned>(n_rows), static_cast<unsigned>(n_heads)),
                dim3(kThreads), o, z, w, n_heads, head, eps);
  PIPELLM_CUDA_LAUNCH_CHECK("gated_rmsnorm");
}

void split_gated_q(const float* src, float* q, float* gate, int64_t n_rows, int n_head, int head_dim, const Launch& s) {
  const int64_t qd = int64_t{n_head} * head_dim, total = n_rows * qd;
  if (total == 0) return;
  launch_kernel(s, split_gated_q_kernel, dim3(elementwise_blocks(total)), dim3(kThreads), src, q, gate, total, head_dim,
                qd);
  PIPELLM_CUDA_LAUNCH_CHECK("split_gated_q");
}

void sigmoid_mul(float* x, const float* gate, int64_t n, const Launch& s) {
  if (n == 0) return;
  launch_kernel(s, sigmoid_mul_kernel, dim3(elementwise_blocks(n)), dim3(kThreads), x, gate, n);
  PIPELLM_CUDA_LAUNCH_CHECK("sigmoid_mul");
}

void gate_dot_add(float* x, const float* y, const float* h, const float* w, int64_t n_rows, int64_t n, const Launch& s) {
  if (n_rows == 0) return;
  check_grid_rows("gate_dot_add", n_rows);
  launch_kernel(s, gate_dot_add_kernel, dim3(static_cast<unsigned>(n_rows)), dim3(kThreads), x, y, h, w, n);
  PIPELLM_CUDA_LAUNCH_CHECK("gate_dot_add");
}

void per_layer_combine(float* proj, const float* tok, const float* norm_w, int64_t n_rows, int n_layer, int P,
                       float eps, const Launch& s) {
  if (n_rows == 0) return;
  check_grid_rows("per_layer_combine", n_rows);
  launch_kernel(s, per_layer_combine_kernel, dim3(static_cast<unsigned>(n_rows), static_cast<unsigned>(n_layer)),
                dim3(kThreads), proj, tok, norm_w, n_layer, P, eps);
  PIPELLM_CUDA_LAUNCH_CHECK("per_layer_combine");
}

void moe_scale_weights(float* weights, const int32_t* ids, const float* scale, int64_t n_pairs, const Launch& s) {
  if (n_pairs == 0) return;
  launch_kernel(s, moe_scale_weights_kernel, dim3(elementwise_blocks(n_pairs)), dim3(kThreads), weights, ids, scale,
                n_pairs);
  PIPELLM_CUDA_LAUNCH_CHECK("moe_scale_weights");
}

}  // namespace pipellm::cuda

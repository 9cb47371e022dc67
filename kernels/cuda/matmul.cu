#include "kernels/cuda/matmul.h"

#include <algorithm>

#include "kernels/cuda/cuda_check.h"

namespace pipellm::cuda {
namespace {

__global__ void convert_kernel(const float* x, __half* y, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2half_rn(x[i]);
}

}  // namespace

void gemm_f16(cublasHandle_t h, const __half* w, int64_t n_in, int64_t n_out, const __half* x, int64_t n_tokens,
              float* y, int64_t y_stride, float beta) {
  if (n_tokens == 0) return;
  const float alpha = 1.0f;
  // Column-major view: Y^T (n_out x n_tokens, ld y_stride) = W (stored as n_in x n_out)^T * X^T.
  PIPELLM_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n_out), static_cast<int>(n_tokens),
                                    static_cast<int>(n_in), &alpha, w, CUDA_R_16F, static_cast<int>(n_in), x,
                                    CUDA_R_16F, static_cast<int>(n_in), &beta, y, CUDA_R_32F,
                                    static_cast<int>(y_stride), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void convert_f32_to_f16(const float* x, __half* y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 132 * 32));
  convert_kernel<<<blocks, 256, 0, s>>>(x, y, n);
  PIPELLM_CUDA_LAUNCH_CHECK("convert_f32_to_f16");
}

}  // namespace pipellm::cuda

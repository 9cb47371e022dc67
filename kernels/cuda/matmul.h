// Matrix products for prefill and large batches on the tensor cores (cuBLAS, f16 inputs, f32
// accumulation). Reference: kernels/cpu/matmul.h.
//   y[t][r] = beta * y[t][r] + sum_i W[r][i] * x[t][i]      t < n_tokens, r < n_out
// W: f16 [n_out][n_in] (dequantized by embedding.h's dequantize_f16); x: f16 [n_tokens][n_in];
// y: f32 rows y_stride apart. beta = 1 adds the product to y (residual connections).
#pragma once
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace pipellm::cuda {

void gemm_f16(cublasHandle_t h, const __half* w, int64_t n_in, int64_t n_out, const __half* x, int64_t n_tokens,
              float* y, int64_t y_stride, float beta);

// y = f16(x) elementwise (n values).
void convert_f32_to_f16(const float* x, __half* y, int64_t n, cudaStream_t s);

}  // namespace pipellm::cuda

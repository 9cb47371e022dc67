// RMSNorm on the GPU (reference: kernels/cpu/rmsnorm.h), fused with the conversions the next
// product needs. For each of n_rows rows of n floats (x_stride apart):
//   y = x / sqrt(mean(x^2) + eps) * w        (w may be null: no norm at all when `normalize` is false)
// and, for each non-null output: y_f32 [row][n]; the 8-bit activation blocks xq/xds (see
// act_q8.h) for the quantized mat-vec kernels; y_f16 [row][n] for the tensor-core products.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

struct NormOutArgs {
  const float* x = nullptr;
  int64_t x_stride = 0;
  int n_rows = 0;
  int64_t n = 0;  // multiple of 32
  bool normalize = true;
  const float* w = nullptr;  // [n] or null
  float eps = 1e-5f;
  float* y_f32 = nullptr;    // [n_rows][n]
  int8_t* xq = nullptr;      // [n_rows][n]
  float2* xds = nullptr;     // [n_rows][n/32]
  __half* y_f16 = nullptr;   // [n_rows][n]
};

void rmsnorm_convert(const NormOutArgs& a, const Launch& s);

// Per-head RMSNorm of n_rows rows of n floats in place (qwen3 q/k norm): see rope.h, which
// fuses it; this standalone form is for tests.
void rmsnorm_rows(float* x, const float* w, int n_rows, int n, float eps, cudaStream_t s);

}  // namespace pipellm::cuda

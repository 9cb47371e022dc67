// Products of many activation rows with quantized weights on tensor cores (int8 mma), for
// prefill chunks and batched decode, without a dequantized copy of the weights. Reference:
// kernels/cpu/matmul.h; test: tests/gpu/mmq_test.cpp.
//
//   y[t][r] (+)= sum_k W[r][k] * x[t][k]      r < w.n_out, t < n_rows
//
// The activations come as 8-bit blocks (act_q8.h: xq, and xds = {d, d * sum(q)} per 32 values),
// as rmsnorm_convert makes them for the mat-vec. Each block of the kernel decodes a 64 x 256 tile
// of weights to int8 with a float scale per 16 values (and, for Q4_K, a minimum per 32) in
// shared memory, multiplies it with a 64 x 256 tile of activations (mma m16n8k16 s8), and scales
// each 16-value partial sum into float accumulators. Weights are read once per 64 activation
// rows, so a decode batch of up to 64 sequences reads them once.
// Status: exact to float rounding, not yet fast (single-buffered tiles, one 64-row block per SM
// quarter for small n_out): 5x slower than cuBLAS on f16 copies at pp512 on an H200
// (bench/RESULTS.md), so the engine uses it only when asked (CudaStageOptions::mmq).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/weight_layout.h"

namespace pipellm::cuda {

struct MmqArgs {
  DeviceMatrix w;
  int n_rows = 0;                // activation rows
  const int8_t* xq = nullptr;    // [n_rows][w.n_in]
  const float2* xds = nullptr;   // [n_rows][w.n_in / 32]
  float* y = nullptr;            // [n_rows][y_stride]
  int64_t y_stride = 0;
  bool add = false;              // y += product (residual) instead of y = product
};

// Q4_0, Q8_0, Q4_K and Q6_K with n_in a multiple of 256.
bool mmq_supports(const DeviceMatrix& w);

// Throws Error for a matrix mmq_supports() refuses.
void mmq(const MmqArgs& a, const Launch& s);

}  // namespace pipellm::cuda

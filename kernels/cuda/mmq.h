// Products of several activation rows with quantized weights on tensor cores (int8 mma), for
// batched decode and small prefill chunks, without a dequantized copy of the weights. Reference:
// kernels/cpu/matmul.h; test: tests/gpu/mmq_test.cpp.
//
//   y[t][r] (+)= sum_k W[r][k] * x[t][k]      r < w.n_out, t < n_rows
//
// The activations come as 8-bit blocks (act_q8.h: xq, and xds = {d, d * sum(q)} per 32 values),
// as rmsnorm_convert makes them for the mat-vec. A block of the kernel owns 64 weight rows and up
// to 64 activation rows (8, 16, 32 or 64: the smallest that holds n_rows, so a 16-sequence
// decode step does no work for 48 empty columns). It streams its weights' raw quantized bytes and
// the activations through shared memory with asynchronous copies (several 256-wide K steps in
// flight), decodes the weights straight into mma fragments (m16n8k32 s8; m16n8k16 for Q6_K's
// 16-value scales) and scales each sub-block's integer sums into float accumulators. Weights are
// read once per 64 activation rows. Where 64-row tiles alone would leave SMs idle (a 4096-row
// matrix is 64 tiles), K is split over a thread-block cluster of 2..8 blocks whose partial sums
// are added in a fixed order through distributed shared memory: results are bit-stable.
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

// Q4_0, Q8_0, Q4_K and Q6_K with n_in a multiple of 256 (Q6_K: an even number of blocks).
bool mmq_supports(const DeviceMatrix& w);

// Throws Error for a matrix mmq_supports() refuses.
void mmq(const MmqArgs& a, const Launch& s);

}  // namespace pipellm::cuda

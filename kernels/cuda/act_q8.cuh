// Device side of the 8-bit activation blocks (act_q8.h), shared by every kernel that writes them
// (rmsnorm_convert, the mat-vec epilogues) so that all of them produce the same bits.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {

// One 32-value block held by a whole warp (value v in each lane): writes this lane's int8 at
// `q_at` and, from lane 0, the block's (d, d * sum q) at `ds_at`. The block sum is that of the
// quantized values, so offsets see the same activations as the integer products.
__device__ __forceinline__ void store_q8_block(float v, int8_t* q_at, float2* ds_at) {
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.0f;
  const int q = d > 0.0f ? __float2int_rn(v / d) : 0;
  const float sum = d * warp_sum(static_cast<float>(q));
  *q_at = static_cast<int8_t>(q);
  if ((threadIdx.x & 31) == 0) *ds_at = make_float2(d, sum);
}

// One step of a sum of squares (explicit fused multiply-add: the same rounding everywhere).
__device__ __forceinline__ float add_square(float ss, float x) { return __fmaf_rn(x, x, ss); }

// RMSNorm's scale from a row's sum of squares.
__device__ __forceinline__ float rms_scale(float ss, int64_t n, float eps) {
  return rsqrtf(__fadd_rn(__fdiv_rn(ss, static_cast<float>(n)), eps));
}

// A normalised value: x * scale * w (w null: no weight), each product rounded once.
__device__ __forceinline__ float rms_apply(float x, float scale, const float* w, int64_t i) {
  const float v = __fmul_rn(x, scale);
  return w ? __fmul_rn(v, w[i]) : v;
}

// The sum of squares of a row of n floats exactly as a 256-thread block (kRmsThreads) reduces it:
// thread t sums elements t, t + 256, ... in order, each warp reduces its lanes (warp_sum), then the
// 8 warp sums are reduced by one warp. `NT` threads (a multiple of 32 dividing 256) play the 256
// virtual threads; `red` holds 8 floats; all NT threads must call; every thread gets the sum.
constexpr int kRmsThreads = 256;

template <int NT, class Load>
__device__ __forceinline__ float row_sum_squares(Load load, int64_t n, float* red) {
  static_assert(kRmsThreads % NT == 0 && NT % 32 == 0, "threads must divide 256");
  constexpr int kVirt = kRmsThreads / NT;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float part[kVirt];
#pragma unroll
  for (int k = 0; k < kVirt; ++k) {
    float ss = 0.0f;
    for (int64_t i = threadIdx.x + k * NT; i < n; i += kRmsThreads) ss = add_square(ss, load(i));
    part[k] = warp_sum(ss);
  }
  __syncthreads();  // `red` may still be read from an earlier call
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < kVirt; ++k) red[k * (NT / 32) + warp] = part[k];
  }
  __syncthreads();
  return warp_sum(lane < kRmsThreads / 32 ? red[lane] : 0.0f);
}

}  // namespace pipellm::cuda

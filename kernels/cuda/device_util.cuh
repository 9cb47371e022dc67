// Small device helpers shared by the kernels: warp and block reductions, grid-stride sizing.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace pipellm::cuda {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// A 32-value activation block held one value per lane as 8-bit (act_q8.h): returns the lane's
// value, ds = (d, d * sum(q)). The block sum of the quantized values: offsets then see the same
// activations as the integer products, so their rounding errors partly cancel. The one copy of
// this arithmetic, so that fused kernels quantize bit for bit as rmsnorm_convert does.
__device__ __forceinline__ int8_t quantize_act_block(float v, float2& ds) {
  const float d = warp_max(fabsf(v)) / 127.0f;
  const int q = d > 0.0f ? __float2int_rn(v / d) : 0;
  ds = make_float2(d, d * warp_sum(static_cast<float>(q)));
  return static_cast<int8_t>(q);
}

// Sum over a block of NT threads (all threads must call); `red` holds NT/32 floats.
template <int NT>
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < NT / 32 ? red[lane] : 0.0f;
  return warp_sum(t);
}

// Maximum over a block of NT threads (all threads must call); `red` holds NT/32 floats.
template <int NT>
__device__ __forceinline__ float block_max(float v, float* red) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < NT / 32 ? red[lane] : -INFINITY;
  return warp_max(t);
}

// Blocks of `threads` for a grid-stride loop over `total` elements: enough to fill the GPU (an
// H200 has 132 SMs), no more.
inline unsigned elementwise_blocks(int64_t total, int threads = 256) {
  constexpr int64_t kMaxBlocks = 132 * 16;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((total + threads - 1) / threads, kMaxBlocks)));
}

}  // namespace pipellm::cuda

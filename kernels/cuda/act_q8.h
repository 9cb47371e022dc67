// 8-bit activation blocks consumed by the quantized mat-vec kernels (matvec_quant.h).
// A row of n floats becomes n int8 values xq (blocks of 32 consecutive values share a scale)
// and n/32 float2 xds: xds.x = d (scale: x ~ d * q, d = max|x| / 127), xds.y = d * sum(q), the
// block's sum as quantized (used by formats with a per-block minimum/offset).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace pipellm::cuda {

constexpr int kActBlock = 32;

}  // namespace pipellm::cuda

// CPU quantizers (for writing models): Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, MXFP4, plus F32/F16/BF16.
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/tensor_type.h"

namespace pipellm {

bool can_quantize(TensorType type);
// Encodes n elements (a multiple of the block size) into dst (tensor_row_bytes(type, n) bytes).
// Returns the bytes written. Throws Error for an unsupported type.
size_t quantize_row(TensorType type, const float* src, void* dst, int64_t n);

}  // namespace pipellm

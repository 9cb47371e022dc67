// CPU reference dequantizers: bit-exact to the GGUF block formats' definitions.
#pragma once
#include <cstdint>

#include "base/tensor_type.h"

namespace pipellm {

// Decodes n elements (a multiple of the type's block size) starting at `src`.
// Throws Error for a type without a dequantizer.
void dequantize_row(TensorType type, const void* src, float* dst, int64_t n);

}  // namespace pipellm

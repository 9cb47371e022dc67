// Dot products of a stored (possibly quantized) row with a float vector: the CPU engine's
// inner loop. Computed block by block, never materialising the dequantized row; the result
// equals dot(dequantize_row(row), x) up to float rounding.
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/tensor_type.h"

namespace pipellm {

// n must be a multiple of the type's block size. Throws Error for a type without a kernel.
float vec_dot_row(TensorType type, const void* row, const float* x, int64_t n);

// y[r] = dot(row r, x) for rows stored row_bytes apart starting at w.
void vec_dot_rows(TensorType type, const void* w, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                  float* y);

// Kernel selection, for callers that hoist it out of their loops and for tests.
using VecDotFn = float (*)(const void* row, const float* x, int64_t n);
enum class VecDotIsa { Scalar, Avx2 };  // Avx2 means AVX2 + FMA + F16C

bool vec_dot_isa_available(VecDotIsa isa);  // Scalar always; Avx2 if this CPU has it
// The fastest kernel this CPU runs for `type`. Throws Error for an unsupported type.
VecDotFn vec_dot_kernel(TensorType type);
// The kernel of one instruction set, or nullptr where that set has none for `type` (or is
// unavailable on this CPU). Scalar has every type dequantize_row supports.
VecDotFn vec_dot_kernel(TensorType type, VecDotIsa isa);

}  // namespace pipellm

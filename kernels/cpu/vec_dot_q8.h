// Dot products of a stored quantized row with 8-bit activations (quantize_activations.h):
// integer products per block, scaled once per block or sub-block. The result equals
// dot(dequantize_row(row), x_hat) up to float rounding, where x_hat is the rounded vector;
// against the float vector x it differs by at most sum_i |w_i| * d(block of i) / 2.
// F32/F16/BF16 weights and formats without such a kernel use vec_dot.h with float x.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/quantize_activations.h"
#include "kernels/cpu/tensor_type.h"
#include "kernels/cpu/vec_dot.h"

namespace pipellm {

// xq: act_quant_for(type) blocks of n elements; n a multiple of that block size.
using VecDotQ8Fn = float (*)(const void* row, const void* xq, int64_t n);

// The fastest kernel this CPU runs for `type`, or nullptr where the type has none
// (act_quant_for(type) == ActQuant::None).
VecDotQ8Fn vec_dot_q8_kernel(TensorType type);
// The kernel of one instruction set, or nullptr (no kernel, or the set is unavailable).
VecDotQ8Fn vec_dot_q8_kernel(TensorType type, VecDotIsa isa);

namespace detail {
VecDotQ8Fn vec_dot_q8_scalar_kernel(TensorType type);
VecDotQ8Fn vec_dot_q8_avx2_kernel(TensorType type);  // does not check the CPU
}  // namespace detail

}  // namespace pipellm

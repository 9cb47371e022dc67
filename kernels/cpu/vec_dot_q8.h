// Dot products of a stored quantized row with 8-bit activations (quantize_activations.h):
// integer products per block, scaled once per block or sub-block. The result equals
// dot(dequantize_row(row), x_hat) up to float rounding, where x_hat is the rounded vector;
// against the float vector x it differs by at most sum_i |w_i| * d(block of i) / 2.
// F32/F16/BF16 weights and formats without such a kernel use vec_dot.h with float x.
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/tensor_type.h"
#include "kernels/cpu/quantize_activations.h"
#include "kernels/cpu/vec_dot.h"

namespace pipellm {

// xq: act_quant_for(type) blocks of n elements; n a multiple of that block size.
using VecDotQ8Fn = float (*)(const void* row, const void* xq, int64_t n);
// Several tokens in one pass over the row: out[t] = dot(row, xq + t * xq_bytes) for t < nt,
// each with the same bits as the one-token kernel gives (so a batch equals token by token).
using VecDotQ8TokensFn = void (*)(const void* row, const void* xq, size_t xq_bytes, int nt, int64_t n, float* out);

struct VecDotQ8Kernels {
  VecDotQ8Fn one = nullptr;
  VecDotQ8TokensFn tokens = nullptr;
};

// The fastest kernels this CPU runs for `type`; both nullptr where the type has none
// (act_quant_for(type) == ActQuant::None).
VecDotQ8Kernels vec_dot_q8_kernels(TensorType type);
// Those of one instruction set; nullptr where it has none or is unavailable on this CPU.
VecDotQ8Kernels vec_dot_q8_kernels(TensorType type, VecDotIsa isa);
inline VecDotQ8Fn vec_dot_q8_kernel(TensorType type) { return vec_dot_q8_kernels(type).one; }
inline VecDotQ8Fn vec_dot_q8_kernel(TensorType type, VecDotIsa isa) { return vec_dot_q8_kernels(type, isa).one; }

namespace detail {
VecDotQ8Kernels vec_dot_q8_scalar_kernels(TensorType type);
VecDotQ8Kernels vec_dot_q8_avx2_kernels(TensorType type);  // does not check the CPU
}  // namespace detail

}  // namespace pipellm

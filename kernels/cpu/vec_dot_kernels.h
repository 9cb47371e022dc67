// Per-instruction-set kernel tables behind vec_dot_kernel (internal to kernels/cpu).
#pragma once
#include "kernels/cpu/vec_dot.h"

namespace pipellm::detail {

// nullptr when the set has no kernel for the type.
VecDotFn vec_dot_scalar_kernel(TensorType type);
VecDotFn vec_dot_avx2_kernel(TensorType type);  // does not check the CPU

}  // namespace pipellm::detail

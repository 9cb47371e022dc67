// vec_dot_q8_kernel: run-time choice of the instruction set for the integer dot products.
#include "kernels/cpu/vec_dot_q8.h"

namespace pipellm {

VecDotQ8Kernels vec_dot_q8_kernels(TensorType type, VecDotIsa isa) {
  if (!vec_dot_isa_available(isa)) return {};
  return isa == VecDotIsa::Avx2 ? detail::vec_dot_q8_avx2_kernels(type) : detail::vec_dot_q8_scalar_kernels(type);
}

VecDotQ8Kernels vec_dot_q8_kernels(TensorType type) {
  const VecDotQ8Kernels k = vec_dot_q8_kernels(type, VecDotIsa::Avx2);
  return k.one != nullptr ? k : detail::vec_dot_q8_scalar_kernels(type);
}

}  // namespace pipellm

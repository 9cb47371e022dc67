// vec_dot_q8_kernel: run-time choice of the instruction set for the integer dot products.
#include "kernels/cpu/vec_dot_q8.h"

namespace pipellm {

VecDotQ8Fn vec_dot_q8_kernel(TensorType type, VecDotIsa isa) {
  if (!vec_dot_isa_available(isa)) return nullptr;
  return isa == VecDotIsa::Avx2 ? detail::vec_dot_q8_avx2_kernel(type) : detail::vec_dot_q8_scalar_kernel(type);
}

VecDotQ8Fn vec_dot_q8_kernel(TensorType type) {
  if (VecDotQ8Fn f = vec_dot_q8_kernel(type, VecDotIsa::Avx2)) return f;
  return detail::vec_dot_q8_scalar_kernel(type);
}

}  // namespace pipellm

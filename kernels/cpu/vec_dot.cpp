// vec_dot_row / vec_dot_rows: row checks and run-time choice of the instruction set.
#include "kernels/cpu/vec_dot.h"

#include <string>

#include "base/error.h"
#include "kernels/cpu/vec_dot_kernels.h"

namespace pipellm {

bool vec_dot_isa_available(VecDotIsa isa) {
  switch (isa) {
    case VecDotIsa::Scalar: return true;
    case VecDotIsa::Avx2:
#if defined(__x86_64__) || defined(__i386__)
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
      return false;
#endif
  }
  return false;
}

VecDotFn vec_dot_kernel(TensorType type, VecDotIsa isa) {
  if (!vec_dot_isa_available(isa)) return nullptr;
  return isa == VecDotIsa::Avx2 ? detail::vec_dot_avx2_kernel(type) : detail::vec_dot_scalar_kernel(type);
}

VecDotFn vec_dot_kernel(TensorType type) {
  if (VecDotFn f = vec_dot_kernel(type, VecDotIsa::Avx2)) return f;
  if (VecDotFn f = detail::vec_dot_scalar_kernel(type)) return f;
  throw Error(std::string("vec_dot: no CPU dot-product kernel for tensor type ") + tensor_type_name(type));
}

namespace {

void check_row(TensorType type, int64_t n) {
  const auto& info = tensor_type_info(type);
  if (n < 0 || n % info.block_size != 0)
    throw Error(std::string("vec_dot: ") + std::to_string(n) + " elements is not a whole number of " + info.name +
                " blocks (" + std::to_string(info.block_size) + ")");
}

}  // namespace

float vec_dot_row(TensorType type, const void* row, const float* x, int64_t n) {
  check_row(type, n);
  return vec_dot_kernel(type)(row, x, n);
}

void vec_dot_rows(TensorType type, const void* w, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                  float* y) {
  check_row(type, n);
  const VecDotFn f = vec_dot_kernel(type);
  const auto* p = static_cast<const uint8_t*>(w);
  for (int64_t r = 0; r < n_rows; ++r) y[r] = f(p + static_cast<size_t>(r) * row_bytes, x, n);
}

}  // namespace pipellm

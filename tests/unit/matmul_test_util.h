// The CPU product (kernels/cpu/matmul.h) as the op tests call it: `rows` rows of `w` (row_bytes
// apart, `type`) times T rows of x (n each), split over nth threads; outputs start as NaN, so a
// row no thread wrote shows.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/matmul.h"

namespace pipellm::test {

inline std::vector<float> run_matmul(TensorType type, const void* w, size_t row_bytes, int64_t rows, int64_t n,
                                     const std::vector<float>& x, int64_t T, int act_parts, int nth) {
  std::vector<float> y(static_cast<size_t>(T * rows), std::nanf(""));
  MatmulArgs a;
  a.type = type;
  a.w = w;
  a.row_bytes = row_bytes;
  a.n_rows = rows;
  a.n = n;
  a.x = x.data();
  a.x_stride = n;
  a.n_tokens = T;
  a.y = y.data();
  a.y_stride = rows;
  a.act_parts = act_parts;
  for (int ith = 0; ith < nth; ++ith) matmul(a, ith, nth);
  return y;
}

}  // namespace pipellm::test

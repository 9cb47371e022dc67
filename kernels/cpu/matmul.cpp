#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/vec_dot.h"

namespace pipellm {

namespace {

constexpr int64_t kRowTile = 16;   // rows decoded at once for multi-token products
constexpr int64_t kRowAlign = 4;   // thread chunks start at multiples of this

}  // namespace

void matmul(const MatmulArgs& a, int ith, int nth) {
  // Contiguous chunk of rows for this thread.
  const int64_t per = ((a.n_rows + nth - 1) / nth + kRowAlign - 1) / kRowAlign * kRowAlign;
  const int64_t r0 = std::min(a.n_rows, per * ith);
  const int64_t r1 = std::min(a.n_rows, r0 + per);
  if (r0 >= r1) return;
  const auto* w = static_cast<const uint8_t*>(a.w);

  if (a.n_tokens == 1) {
    vec_dot_rows(a.type, w + static_cast<size_t>(r0) * a.row_bytes, a.row_bytes, r1 - r0, a.x, a.n, a.y + r0);
    return;
  }

  const VecDotFn dot = vec_dot_kernel(TensorType::F32);
  std::vector<float> tile(static_cast<size_t>(kRowTile * a.n));
  for (int64_t rt = r0; rt < r1; rt += kRowTile) {
    const int64_t nr = std::min(kRowTile, r1 - rt);
    for (int64_t r = 0; r < nr; ++r) {
      dequantize_row(a.type, w + static_cast<size_t>(rt + r) * a.row_bytes, tile.data() + r * a.n, a.n);
    }
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const float* xt = a.x + t * a.x_stride;
      float* yt = a.y + t * a.y_stride + rt;
      for (int64_t r = 0; r < nr; ++r) yt[r] = dot(tile.data() + r * a.n, xt, a.n);
    }
  }
}

}  // namespace pipellm

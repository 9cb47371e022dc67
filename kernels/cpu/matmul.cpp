#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/dequantize.h"
#if __has_include("kernels/cpu/vec_dot.h")
#include "kernels/cpu/vec_dot.h"
#else
// TEMPORARY until kernels/cpu/vec_dot.h lands: dequantize-then-dot stand-in.
namespace pipellm {
namespace {
void vec_dot_rows(TensorType type, const void* w, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                  float* y) {
  std::vector<float> row(static_cast<size_t>(n));
  for (int64_t r = 0; r < n_rows; ++r) {
    dequantize_row(type, static_cast<const uint8_t*>(w) + static_cast<size_t>(r) * row_bytes, row.data(), n);
    float s = 0.0f;
    for (int64_t i = 0; i < n; ++i) s += row[static_cast<size_t>(i)] * x[i];
    y[r] = s;
  }
}
}  // namespace
}  // namespace pipellm
#endif

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

  std::vector<float> tile(static_cast<size_t>(kRowTile * a.n));
  for (int64_t rt = r0; rt < r1; rt += kRowTile) {
    const int64_t nr = std::min(kRowTile, r1 - rt);
    for (int64_t r = 0; r < nr; ++r) {
      dequantize_row(a.type, w + static_cast<size_t>(rt + r) * a.row_bytes, tile.data() + r * a.n, a.n);
    }
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const float* xt = a.x + t * a.x_stride;
      float* yt = a.y + t * a.y_stride + rt;
      vec_dot_rows(TensorType::F32, tile.data(), static_cast<size_t>(a.n) * sizeof(float), nr, xt, a.n, yt);
    }
  }
}

}  // namespace pipellm

#include "kernels/cpu/rope.h"

#include <cmath>

namespace pipellm {

void rope_angles(const RopeParams& p, int64_t pos, float* cs) {
  const int half = p.n_rot / 2;
  for (int i = 0; i < half; ++i) {
    double theta = static_cast<double>(pos) * p.freq_scale *
                   std::pow(static_cast<double>(p.base), -2.0 * i / p.n_rot);
    if (p.freq_factors != nullptr) theta /= p.freq_factors[i];
    cs[2 * i] = static_cast<float>(std::cos(theta));
    cs[2 * i + 1] = static_cast<float>(std::sin(theta));
  }
}

void rope_apply(const RopeParams& p, const float* cs, float* x, int n_heads, int head_dim) {
  const int half = p.n_rot / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const int ia = p.mode == RopeMode::Normal ? 2 * i : i;
      const int ib = p.mode == RopeMode::Normal ? 2 * i + 1 : i + half;
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const float a = v[ia], b = v[ib];
      v[ia] = a * c - b * s;
      v[ib] = a * s + b * c;
    }
  }
}

void rope(const RopeParams& p, int64_t pos, float* x, int n_heads, int head_dim) {
  std::vector<float> cs(static_cast<size_t>(p.n_rot));
  rope_angles(p, pos, cs.data());
  rope_apply(p, cs.data(), x, n_heads, head_dim);
}

}  // namespace pipellm

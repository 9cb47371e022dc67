#include "kernels/cpu/rope.h"

#include <algorithm>
#include <cmath>

namespace pipellm {

void rope_yarn_corr_dims(int n_rot, int n_ctx_orig, float base, float beta_fast, float beta_slow, float dims[2]) {
  const auto corr = [&](float beta) {
    return n_rot * std::log(n_ctx_orig / (beta * 2.0 * M_PI)) / (2.0 * std::log(static_cast<double>(base)));
  };
  dims[0] = static_cast<float>(std::max(0.0, std::floor(corr(beta_fast))));
  dims[1] = static_cast<float>(std::min(n_rot - 1.0, std::ceil(corr(beta_slow))));
}

void rope_angles(const RopeParams& p, int64_t pos, float* cs) {
  const int half = p.n_rot / 2;
  double mscale = p.attn_factor;
  if (p.ext_factor != 0.0f) mscale *= 1.0 + 0.1 * std::log(1.0 / p.freq_scale);
  for (int i = 0; i < half; ++i) {
    double extrap = static_cast<double>(pos) * std::pow(static_cast<double>(p.base), -2.0 * i / p.n_rot);
    if (p.freq_factors != nullptr) extrap /= p.freq_factors[i];
    double theta = extrap * p.freq_scale;
    if (p.ext_factor != 0.0f) {
      const double y = (i - p.corr_dims[0]) / std::max(0.001, static_cast<double>(p.corr_dims[1] - p.corr_dims[0]));
      const double m = p.ext_factor * (1.0 - std::min(1.0, std::max(0.0, y)));
      theta = theta * (1.0 - m) + extrap * m;
    }
    cs[2 * i] = static_cast<float>(std::cos(theta) * mscale);
    cs[2 * i + 1] = static_cast<float>(std::sin(theta) * mscale);
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

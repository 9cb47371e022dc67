// RMS normalisation (CPU reference): y[i] = x[i] / sqrt(mean_j(x[j]^2) + eps) * w[i].
// `w` may be null (no scale). y may alias x. The sum of squares is accumulated in double.
#pragma once
#include <cstdint>

namespace pipellm {

void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* y);

// The same over n_rows consecutive rows of n elements each (per-head q/k norm, batches).
void rmsnorm_rows(const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* y);

}  // namespace pipellm

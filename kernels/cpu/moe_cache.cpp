#include "kernels/cpu/moe_cache.h"

namespace pipellm {

void moe_cache_split(const int32_t* ids, const float* w, const int32_t* slot_of, int n_expert, int n_pairs,
                     int32_t* gpu_ids, float* gpu_w, int32_t* host_ids) {
  for (int p = 0; p < n_pairs; ++p) {
    const int32_t e = ids[p];
    const int32_t s = e >= 0 && e < n_expert ? slot_of[e] : -1;
    gpu_ids[p] = s >= 0 ? s : 0;
    gpu_w[p] = s >= 0 ? w[p] : 0.0f;
    host_ids[p] = s >= 0 || e < 0 || e >= n_expert ? -1 : e;
  }
}

void moe_add_bias(float* y, const float* bias, const int32_t* ids, int n_pairs, int64_t n) {
  for (int p = 0; p < n_pairs; ++p) {
    const float* b = bias + static_cast<int64_t>(ids[p]) * n;
    for (int64_t i = 0; i < n; ++i) y[p * n + i] += b[i];
  }
}

}  // namespace pipellm

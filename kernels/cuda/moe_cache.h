// The expert cache's pair split and per-expert bias on the GPU: kernels/cpu/moe_cache.h says what
// they compute (same results, bit for bit).
#pragma once
#include <cstdint>

#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

void moe_cache_split(const int32_t* ids, const float* w, const int32_t* slot_of, int n_expert, int n_pairs,
                     int32_t* gpu_ids, float* gpu_w, int32_t* host_ids, const Launch& s);

void moe_add_bias(float* y, const float* bias, const int32_t* ids, int n_pairs, int64_t n, const Launch& s);

}  // namespace pipellm::cuda

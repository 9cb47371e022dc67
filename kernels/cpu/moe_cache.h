// Routed pairs split between an expert cache on the GPU and the experts in host memory (CPU
// references of kernels/cuda/moe_cache.h; engine/cuda/expert_cache.h uses them).
// moe_cache_split: for pair p of expert e = ids[p], s = slot_of[e]:
//   cached (s >= 0): gpu_ids[p] = s, gpu_w[p] = w[p], host_ids[p] = -1
//   not cached:      gpu_ids[p] = 0, gpu_w[p] = 0,    host_ids[p] = e
//   (an uncached pair still multiplies slot 0 on the GPU, weighted 0: no branch in the products;
//   the cache keeps slot 0 zeros)
//   ids outside [0, n_expert) are neither: gpu 0 / 0, host -1.
// moe_add_bias: y[p][i] += bias[ids[p]][i] (an expert's bias by its real id, where the products
//   ran on cache slots).
#pragma once
#include <cstdint>

namespace pipellm {

void moe_cache_split(const int32_t* ids, const float* w, const int32_t* slot_of, int n_expert, int n_pairs,
                     int32_t* gpu_ids, float* gpu_w, int32_t* host_ids);

void moe_add_bias(float* y, const float* bias, const int32_t* ids, int n_pairs, int64_t n);

}  // namespace pipellm

// What the split phase of attention (attention.cu's CUDA-core kernel, attention_mma.cu's
// tensor-core one) and the combine kernel that merges it share: the keys a (token, split) block
// covers, where its kv head starts in the token's cache rows, and the layout of the partial
// results (the unnormalised outputs o [T][H][S][D], then (m, l) [T][H][S][2]).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention.h"

namespace pipellm::cuda {

// Keys [k0, k1) of split `split` for a token at position p (-1: padding, no keys). Splits count
// from the first key the token sees (the window's start): a split past the end is empty (m =
// -inf, l = 0) and the merge skips it. So splits sized for all n_ctx keys (one CUDA graph per
// context bucket) stay correct, and splits sized for just the window suffice.
struct SplitKeys {
  int k0, k1;
};
__device__ __forceinline__ SplitKeys split_keys(const AttentionArgs& a, int p, int split) {
  const int n_keys = p + 1;  // 0 for padding
  const int lo = a.window > 0 ? max(0, n_keys - a.window) : 0;
  const int k0 = lo + split * a.keys_per_split;
  return {k0, min(n_keys, k0 + a.keys_per_split)};
}

// Kv head g's bytes in row 0 of token t's slot (rows of n_head_kv heads of head_bytes each; a
// padding token, p < 0, reads slot 0 and never uses it).
__device__ __forceinline__ const uint8_t* cache_head(const void* cache, const AttentionArgs& a, int t, int p, int g,
                                                     int64_t head_bytes) {
  const int64_t slot_rows = p >= 0 ? static_cast<int64_t>(a.slot[t]) * a.n_ctx : 0;
  return static_cast<const uint8_t*>(cache) + (slot_rows * a.n_head_kv + g) * head_bytes;
}

// Head h of token t: its splits' outputs [S][D], and their (m, l) pairs [S][2].
__device__ __forceinline__ float* partial_o(const AttentionArgs& a, int t, int h) {
  return a.partial + (static_cast<int64_t>(t) * a.n_head + h) * a.n_splits * a.head_dim;
}
__device__ __forceinline__ float* partial_ml(const AttentionArgs& a, int t, int h) {
  return a.partial + static_cast<int64_t>(a.n_tokens) * a.n_head * a.n_splits * a.head_dim +
         (static_cast<int64_t>(t) * a.n_head + h) * a.n_splits * 2;
}

}  // namespace pipellm::cuda

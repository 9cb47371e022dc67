// Causal multi-head attention over a KV cache (CPU reference), with grouped-query heads.
//
// For token t and query head h (kv head g = h / (n_head / n_head_kv)):
//   s_j = scale * dot(q[t][h], K[t][j][g])           for cache rows j in [j0, n_kv[t])
//   out[t][h] = sum_j softmax(s)_j * V[t][j][g]
// j0 = 0, or with a sliding window W: j0 = max(0, n_kv[t] - W) (the query, at row n_kv[t]-1,
// sees W keys including its own: gemma3, gpt-oss). With attention sinks (gpt-oss) head h's
// softmax denominator also holds exp(sinks[h]): a logit with no value vector.
// q row t: q + t*q_stride, heads contiguous (head h at h*head_dim); out likewise with head_dim_v.
// K[t] / V[t]: the first cache row of token t's sequence; rows k_row_bytes / v_row_bytes apart,
// kv head g at element g*head_dim (g*head_dim_v) of a row; elements F16, F32, or the 32-value
// blocks Q8_0 / Q4_0 (see KvCache: head g is then the row's blocks from g*head_dim/32 on, and
// head_dim must be a multiple of 32). Quantized rows are read in float on the fly, block by
// block (scores and outputs as over the dequantized rows; nothing else is rounded).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>

#include "base/tensor_type.h"

namespace pipellm {

struct AttentionArgs {
  int n_tokens = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  int head_dim_v = 0;
  float scale = 1.0f;
  const float* q = nullptr;
  int64_t q_stride = 0;
  float* out = nullptr;
  int64_t out_stride = 0;
  const int32_t* n_kv = nullptr;          // per token
  const uint8_t* const* k = nullptr;      // per token
  const uint8_t* const* v = nullptr;      // per token
  size_t k_row_bytes = 0;
  size_t v_row_bytes = 0;
  TensorType kv_type = TensorType::F16;  // K and V: F16 or F32 (or Q8_0, Q4_0) ...
  std::optional<TensorType> k_type, v_type;  // ... unless set here, per side (F16, F32, Q8_0, Q4_0)
  int window = 0;                 // sliding window in keys, 0 = none
  int ring = 0;                   // > 0: the cache is a ring of `ring` rows (key j in row j % ring)
  const float* sinks = nullptr;   // [n_head] or null
};

// Part ith of nth of the (token, head) pairs; call with ith = 0..nth-1 (any threads).
void attention(const AttentionArgs& a, int ith, int nth);

}  // namespace pipellm

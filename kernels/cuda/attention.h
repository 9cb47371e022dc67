// Causal attention with grouped-query heads over the KV cache (reference:
// kernels/cpu/attention.h): K and V each f16, or Q8_0 / Q4_0 blocks (engine/model/kv_cache.h)
// dequantized to float as they are read, so the products are those over the dequantized rows.
// Token t of slot slot[t] at position pos[t] attends to its slot's cache rows [0, pos[t]] (its
// own k/v must already be stored, see rope.h), or the last `window` of them; with sinks, as
// kernels/cpu/attention.h.
//
// Split-KV: the key range of each token is cut into n_splits pieces of keys_per_split keys; one
// block per (kv head, split, token) handles all query heads of the group with an online
// softmax over tiles of 32 keys (no score matrix is ever written to global memory), writing a
// partial (unnormalised output, running max, running sum); a second kernel merges the splits.
// Each tile's key and value rows are copied to shared memory asynchronously while the previous
// tile is computed: a decode step over a long cache streams it instead of waiting on each row.
// For decode under CUDA graphs, n_splits/keys_per_split depend only on the context bucket,
// while the lengths are read from device memory at run time. Padding tokens (pos < 0) give 0.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include "base/tensor_type.h"
#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

struct AttentionArgs {
  int n_tokens = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // 64, 96, 128, 256 or 512 (also the v head size)
  float scale = 1.0f;
  const float* q = nullptr;  // [T][q_stride]
  int64_t q_stride = 0;
  float* out = nullptr;      // [T][out_stride]
  int64_t out_stride = 0;
  const void* k_cache = nullptr;  // this layer's [n_slots][n_ctx][n_head_kv*head_dim] of k_type
  const void* v_cache = nullptr;  // of v_type
  TensorType k_type = TensorType::F16;  // F16, Q8_0 or Q4_0
  TensorType v_type = TensorType::F16;
  int n_ctx = 0;  // rows per slot: key/position p lives in row p % n_ctx (a ring for sliding-window layers)
  const int32_t* pos = nullptr;   // device [T]
  const int32_t* slot = nullptr;  // device [T]
  int n_splits = 1;
  int keys_per_split = 0;         // n_splits * keys_per_split >= max pos + 1
  float* partial = nullptr;       // scratch: attention_scratch_floats() floats
  // Optional: the output's 8-bit activation blocks too (act_q8.h; out_stride a multiple of 32),
  // exactly as rmsnorm_convert(normalize = false) makes them from `out`, written by the kernel
  // that merges the splits: the next quantized product needs no conversion pass.
  int8_t* xq = nullptr;   // [T][out_stride]
  float2* xds = nullptr;  // [T][out_stride / 32]
  // Sliding window (gemma3, gpt-oss): token t sees keys (pos[t] - window, pos[t]]; 0 = none.
  int window = 0;
  // Attention sinks (gpt-oss): head h's softmax denominator also holds exp(sinks[h]). Device [n_head] or null.
  const float* sinks = nullptr;
  // The split phase on tensor cores where attention_mma.h supports the shape (f16 caches, head_dim
  // 64 or 128): Q and the probabilities rounded to f16 for the products.
  bool tensor_cores = false;
  // Tokens per tensor-core block (prefill): a block takes tokens_per_block consecutive tokens of
  // one slot at consecutive positions (the caller guarantees it), its rows the tokens' query heads
  // of one kv head, so that each key and value row read serves all of them. Needs tensor_cores,
  // one split and tokens_per_block * (n_head / n_head_kv) <= 16 (attention_tokens_per_block).
  int tokens_per_block = 1;
};

// The tokens per tensor-core block for a prompt chunk of n_tokens of one sequence with one split
// (attention_mma.h supports a): as many as 16 query rows hold; 1 where it does not apply.
int attention_tokens_per_block(const AttentionArgs& a);

// Scratch floats the kernels need for these sizes.
int64_t attention_scratch_floats(int n_tokens, int n_head, int head_dim, int n_splits);

// Picks (n_splits, keys_per_split) for keys up to n_keys_max so that about `target_blocks`
// blocks run for n_tokens tokens.
void attention_split(int n_keys_max, int n_tokens, int n_head_kv, int target_blocks, int* n_splits,
                     int* keys_per_split);

void attention(const AttentionArgs& a, const Launch& s);

}  // namespace pipellm::cuda

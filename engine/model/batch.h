// One forward step's work, shared by every backend (CPU, CUDA) and carried along the pipeline.
//
// Token i of the batch belongs to the sequence in KV slot `slot[i]` at position `pos[i]`.
// A sequence's tokens in one batch must have consecutive positions in order, and every earlier
// position of that slot must already be in the KV cache (causal attention: token i sees its
// slot's positions [0, pos[i]]). Several sequences may share a batch (continuous batching).
//
// The first stage reads `tokens`; later stages read `hidden` instead: activations
// [n_tokens][n_embd], row-major, f32. The last stage produces logits only for tokens whose
// `logits` flag is set, in batch order: [n_outputs][n_vocab].
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pipellm {

struct Batch {
  std::vector<int32_t> tokens;  // first stage only
  const float* hidden = nullptr;  // non-first stages: [n_tokens][n_embd]
  std::vector<int32_t> pos;
  std::vector<int32_t> slot;
  std::vector<uint8_t> logits;  // 1: produce logits for this token (last stage)

  int n_tokens() const { return static_cast<int>(pos.size()); }
  int n_outputs() const;

  // Appends a token (or a row of `hidden`).
  void add(int32_t token, int32_t position, int32_t seq_slot, bool want_logits);
  void clear();

  // The run of a sequence: tokens[0..n) at positions start.., logits for the last one only
  // (or for all when all_logits).
  static Batch sequence(const std::vector<int32_t>& tokens, int32_t start_pos, int32_t seq_slot,
                        bool all_logits = false);
};

}  // namespace pipellm

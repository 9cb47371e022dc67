// What travels along the pipeline with each micro-batch, and what comes back from the tail.
//
// Forward direction (rank r -> r+1): a StepHeader (serialised, a few bytes per token) followed by
// the activations [n_tokens][width] f32 as a separate payload (so GPU transports can send them
// from device memory). The header carries the tokens too: the tail keeps each sequence's history
// for repetition penalties and every rank can log what it computes.
// Backward direction (tail -> head): a StepResult with one sampled token per logits row.
// Both carry the per-rank statistics gathered so far (each rank appends its own running totals
// to the header it passes on, the tail copies them into its result), so the head learns every
// rank's figures without a message of their own.
//
// Wire format: little-endian, a magic and a version, then fixed fields and length-prefixed
// arrays; decode() checks every length against the buffer and throws Error naming the field.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/batch.h"
#include "engine/runtime/sampling_spec.h"

namespace pipellm {

// A sequence that starts in a slot with this step: the tail resets that slot's sampler. A
// sequence that reuses the slot's cached prefix (scheduler.h) is not fed those tokens, so its
// sampler gets their last penalty_last_n as `history` (its penalty window, as if fed).
struct SequenceStart {
  int32_t slot = 0;
  int64_t seq_id = 0;
  SamplingSpec sampling;
  std::vector<int32_t> history;
};

// One rank's running totals since it started (engine/pipeline/stage_runner measures them).
struct RankStats {
  int32_t rank = 0;
  int64_t steps = 0;              // micro-steps computed
  double step_seconds = 0.0;      // in the stage's forward pass (and sampling on the tail)
  double transfer_seconds = 0.0;  // sending and receiving activations and step messages
  uint64_t device_bytes = 0;      // GPU memory in use (Stage::device_memory_bytes); 0 on CPU
  bool operator==(const RankStats& o) const;
};

enum class StepKind : uint32_t { Forward = 1, Shutdown = 2 };

struct StepHeader {
  StepKind kind = StepKind::Forward;
  int64_t step_id = 0;     // increasing; also the micro-batch id
  int32_t width = 0;       // floats per activation row that follow (0 on the first hop)
  bool return_logits = false;  // the tail sends the logits rows back too (tests, eval)
  std::vector<SequenceStart> starts;
  Batch batch;             // tokens, pos, slot, logits flags (hidden stays null)
  std::vector<RankStats> stats;  // of the ranks this step has passed so far

  int n_tokens() const { return batch.n_tokens(); }
  std::vector<uint8_t> encode() const;
  static StepHeader decode(const std::vector<uint8_t>& bytes);
};

struct StepResult {
  int64_t step_id = 0;
  std::vector<int32_t> slot;   // per logits row, in batch order
  std::vector<int32_t> token;  // sampled id per row
  std::vector<float> logprob;  // per row when any row's sequence asked (NaN for the others), else empty
  // Per row when any row's sequence asked for alternatives (SamplingSpec::top_logprobs; empty
  // lists for the others), else empty; at most kMaxTopLogprobs per row.
  std::vector<std::vector<TokenLogprob>> top_logprobs;
  int32_t n_vocab = 0;         // > 0 when logits are included
  std::vector<float> logits;   // [rows][n_vocab] when requested
  std::vector<RankStats> stats;  // of the ranks after the head, in rank order

  std::vector<uint8_t> encode() const;
  static StepResult decode(const std::vector<uint8_t>& bytes);
};

}  // namespace pipellm

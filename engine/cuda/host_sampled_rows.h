// The sequences of a CUDA tail that the GPU sampler (kernels/cuda/sampling.h) cannot serve: a
// grammar (structured output: its mask is built on the host, engine/runtime/grammar), top_logprobs
// alternatives, or a filter order the device does not implement. Their slots sample with the host
// Sampler, exactly as the CPU tail does (SlotSamplers: one Sampler per slot from the sequence's
// SamplingSpec, its penalty window fed with every token of the slot that passes).
//
// The stage gives such a slot neutral device settings (greedy, no penalties, no logprob), so its
// logits rows stay as the model made them. After a step, just those rows come back to one pinned
// buffer (async copies, joined by the step's own sync), the host samplers pick, and their tokens
// (with logprobs / top_logprobs where asked) replace the device's picks in the StepOutput. The
// runtime feeds out.tokens as the next step's inputs, so the token emitted is the one the
// device's history records next. Steps without host-sampled slots copy nothing.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "engine/model/batch.h"
#include "engine/model/stage.h"
#include "engine/runtime/sampling_spec.h"
#include "engine/runtime/slot_samplers.h"
#include "kernels/cuda/cuda_raii.h"

namespace pipellm::cuda {

class HostSampledRows {
 public:
  HostSampledRows(int n_slots, int n_vocab);

  // The slot's new sequence samples on the host (start) or on the device (stop). start throws
  // InvalidArgument for bad settings (a grammar that does not parse, no vocabulary, ...).
  void start(int slot, const SamplingSpec& s, const std::vector<int32_t>& history);
  void stop(int slot);
  bool any() const { return n_host_ > 0; }

  // Before the step's sync: copies the logits rows (rows [0, n) of `logits`, [n][n_vocab], one
  // per row of `b` that wants logits, in batch order) whose slot samples on the host.
  void enqueue_copies(const Batch& b, const float* logits, cudaStream_t stream);
  // After the sync: feeds the host slots' tokens of `b` to their samplers, samples the copied rows
  // and puts the picks (and log-probabilities, alternatives where asked) into `out` at their rows.
  // Clears out.top_logprobs otherwise. Call once per tail step, after enqueue_copies when it
  // had rows. Throws Error when the batch carries no token ids for a host-sampled slot.
  void apply(const Batch& b, StepOutput& out);

 private:
  int n_vocab_;
  SlotSamplers samplers_;
  std::vector<uint8_t> on_host_;  // per slot
  int n_host_ = 0;
  PinnedBuffer<float> rows_;        // the copied rows, [copied][n_vocab]
  std::vector<int32_t> out_row_;    // per copied row: its row in the StepOutput
  Batch sub_;                       // the host slots' rows of the step
  std::vector<float> logprobs_;
  std::vector<std::vector<TokenLogprob>> top_;
};

}  // namespace pipellm::cuda

// Sampling on the host for a tail stage: one Sampler per KV slot, started with its sequence's
// SamplingSpec, fed every token of the slot as it passes (its penalty window), asked for one
// token per logits row. The CPU stage's tail uses it; the CUDA stage samples on the device with
// the same semantics (kernels/cuda/sampling.h), and with this for the sequences the device
// sampler cannot serve (engine/cuda/host_sampled_rows.h).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/model/batch.h"
#include "engine/runtime/sampler.h"
#include "engine/runtime/sampling_spec.h"

namespace pipellm {

class SlotSamplers {
 public:
  SlotSamplers(int n_slots, int n_vocab);

  // Throws InvalidArgument for a slot outside [0, n_slots) or bad settings.
  // `history`: tokens the sequence's window starts with (a reused cached prefix's last ones).
  void start(int slot, const SamplingSpec& s, const std::vector<int32_t>& history = {});
  // Drops the slot's sampler (its next sequence samples elsewhere); start() makes a new one.
  void stop(int slot);
  // Records every token of the batch in its slot's window (in batch order), then samples one
  // token per logits row from logits [rows][n_vocab]; `logprobs` gets each row's log-probability
  // where its sequence asked (NaN for the others), or stays empty when none did; `top` likewise
  // gets each row's Sampler::top_logprobs(SamplingSpec::top_logprobs) (empty lists for rows
  // that did not ask). Throws Error when a row's slot has no sequence or the logits count does
  // not match the batch.
  std::vector<int32_t> sample(const Batch& b, const std::vector<float>& logits, std::vector<float>& logprobs,
                              std::vector<std::vector<TokenLogprob>>& top);
  // The same over `count` floats of logits at `logits` (a caller's own buffer, pinned say).
  std::vector<int32_t> sample(const Batch& b, const float* logits, size_t count, std::vector<float>& logprobs,
                              std::vector<std::vector<TokenLogprob>>& top);

 private:
  int n_vocab_;
  std::vector<std::unique_ptr<Sampler>> slots_;
  std::vector<uint8_t> want_logprobs_;  // per slot
  std::vector<int32_t> want_top_;       // per slot: SamplingSpec::top_logprobs
};

}  // namespace pipellm

#include "engine/model/host_stage.h"

#include <string>

#include "base/error.h"

namespace pipellm {

SlotSamplers& HostStage::samplers() {
  if (!samplers_) samplers_ = std::make_unique<SlotSamplers>(n_slots(), config().n_vocab);
  return *samplers_;
}

void HostStage::start_sequence(int slot, const SamplingSpec& sampling, const std::vector<int32_t>& history) {
  if (!is_last()) throw InvalidArgument("start_sequence on a stage without the output head");
  samplers().start(slot, sampling, history);
}

ActivationRows HostStage::input_rows(int n_tokens) {
  in_.resize(static_cast<size_t>(std::max(n_tokens, 0)) * static_cast<size_t>(config().n_embd));
  return {in_.data(), MemorySpace::Host, nullptr};
}

void HostStage::step(const Batch& batch, StepOutput& out, bool want_logits) {
  // forward() reads non-first rows through Batch::hidden: a reused copy (no allocation per step).
  batch_ = batch;
  Batch& b = batch_;
  if (!is_first()) {
    if (in_.size() != static_cast<size_t>(b.n_tokens()) * static_cast<size_t>(config().n_embd)) {
      throw InvalidArgument("step: " + std::to_string(b.n_tokens()) + " tokens but " + std::to_string(in_.size()) +
                            " input floats");
    }
    b.hidden = in_.data();
  }
  forward(b, out_);
  if (!is_last()) return;
  out.tokens = samplers().sample(b, out_, out.logprobs, out.top_logprobs);
  if (want_logits) out.logits = out_;
  else out.logits.clear();
}

}  // namespace pipellm

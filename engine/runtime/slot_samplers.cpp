#include "engine/runtime/slot_samplers.h"

#include <cmath>
#include <string>

#include "base/error.h"

namespace pipellm {

SlotSamplers::SlotSamplers(int n_slots, int n_vocab)
    : n_vocab_(n_vocab), slots_(static_cast<size_t>(n_slots)), want_logprobs_(static_cast<size_t>(n_slots), 0),
      want_top_(static_cast<size_t>(n_slots), 0) {}

void SlotSamplers::start(int slot, const SamplingSpec& s, const std::vector<int32_t>& history) {
  if (slot < 0 || slot >= static_cast<int>(slots_.size())) {
    throw InvalidArgument("sampling: slot " + std::to_string(slot) + " outside [0, " + std::to_string(slots_.size()) + ")");
  }
  if (s.top_logprobs < 0 || s.top_logprobs > kMaxTopLogprobs) {
    throw InvalidArgument("sampling: top_logprobs must be in [0, " + std::to_string(kMaxTopLogprobs) + "] (got " +
                          std::to_string(s.top_logprobs) + ")");
  }
  slots_[static_cast<size_t>(slot)] = std::make_unique<Sampler>(sampler_params(s), n_vocab_);
  for (int32_t t : history) slots_[static_cast<size_t>(slot)]->accept(t);
  want_logprobs_[static_cast<size_t>(slot)] = s.logprobs ? 1 : 0;
  want_top_[static_cast<size_t>(slot)] = s.top_logprobs;
}

void SlotSamplers::stop(int slot) {
  if (slot < 0 || slot >= static_cast<int>(slots_.size())) {
    throw InvalidArgument("sampling: slot " + std::to_string(slot) + " outside [0, " + std::to_string(slots_.size()) + ")");
  }
  slots_[static_cast<size_t>(slot)].reset();
  want_logprobs_[static_cast<size_t>(slot)] = 0;
  want_top_[static_cast<size_t>(slot)] = 0;
}

std::vector<int32_t> SlotSamplers::sample(const Batch& b, const std::vector<float>& logits,
                                          std::vector<float>& logprobs, std::vector<std::vector<TokenLogprob>>& top) {
  return sample(b, logits.data(), logits.size(), logprobs, top);
}

std::vector<int32_t> SlotSamplers::sample(const Batch& b, const float* logits, size_t count,
                                          std::vector<float>& logprobs, std::vector<std::vector<TokenLogprob>>& top) {
  std::vector<int32_t> out;
  logprobs.clear();
  top.clear();
  size_t row = 0;
  for (int i = 0; i < b.n_tokens(); ++i) {
    const int32_t s = b.slot[static_cast<size_t>(i)];
    Sampler* sm = s >= 0 && s < static_cast<int>(slots_.size()) ? slots_[static_cast<size_t>(s)].get() : nullptr;
    if (sm == nullptr) throw Error("sampling: slot " + std::to_string(s) + " has no sequence");
    sm->accept(b.tokens[static_cast<size_t>(i)]);
    if (!b.logits[static_cast<size_t>(i)]) continue;
    if ((row + 1) * static_cast<size_t>(n_vocab_) > count) break;
    out.push_back(sm->sample(logits + row * static_cast<size_t>(n_vocab_)));
    if (want_logprobs_[static_cast<size_t>(s)]) {
      logprobs.resize(out.size(), std::nanf(""));
      logprobs.back() = static_cast<float>(sm->logprob(out.back()));
    }
    if (const int32_t n = want_top_[static_cast<size_t>(s)]; n > 0) {
      top.resize(out.size());
      top.back() = sm->top_logprobs(n);
    }
    ++row;
  }
  if (!logprobs.empty()) logprobs.resize(out.size(), std::nanf(""));
  if (!top.empty()) top.resize(out.size());
  if (row * static_cast<size_t>(n_vocab_) != count || static_cast<int>(row) != b.n_outputs()) {
    throw Error("sampling: " + std::to_string(count) + " logits for " + std::to_string(b.n_outputs()) + " rows");
  }
  return out;
}

}  // namespace pipellm

#include "engine/cuda/host_sampled_rows.h"

#include <cmath>
#include <string>
#include <utility>

#include "base/error.h"
#include "kernels/cuda/cuda_check.h"

namespace pipellm::cuda {

HostSampledRows::HostSampledRows(int n_slots, int n_vocab)
    : n_vocab_(n_vocab), samplers_(n_slots, n_vocab), on_host_(static_cast<size_t>(n_slots), 0) {}

void HostSampledRows::start(int slot, const SamplingSpec& s, const std::vector<int32_t>& history) {
  samplers_.start(slot, s, history);  // checks the slot and builds the Sampler (sampler_params), as the CPU tail does
  uint8_t& h = on_host_[static_cast<size_t>(slot)];
  if (!h) ++n_host_;
  h = 1;
}

void HostSampledRows::stop(int slot) {
  samplers_.stop(slot);
  uint8_t& h = on_host_[static_cast<size_t>(slot)];
  if (h) --n_host_;
  h = 0;
}

void HostSampledRows::enqueue_copies(const Batch& b, const float* logits, cudaStream_t stream) {
  out_row_.clear();
  if (n_host_ == 0) return;
  int32_t row = 0;
  for (int i = 0; i < b.n_tokens(); ++i) {
    if (!b.logits[static_cast<size_t>(i)]) continue;
    if (on_host_[static_cast<size_t>(b.slot[static_cast<size_t>(i)])]) out_row_.push_back(row);
    ++row;
  }
  if (out_row_.empty()) return;
  const size_t V = static_cast<size_t>(n_vocab_);
  // Grown, never shrunk: the previous step's copies were joined by its sync.
  if (rows_.size() < out_row_.size() * V) rows_ = PinnedBuffer<float>(out_row_.size() * V);
  // One copy per run of consecutive rows (a decode step of host slots side by side: one copy).
  for (size_t k = 0; k < out_row_.size();) {
    size_t e = k + 1;
    while (e < out_row_.size() && out_row_[e] == out_row_[e - 1] + 1) ++e;
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(rows_.get() + k * V, logits + static_cast<size_t>(out_row_[k]) * V,
                                       (e - k) * V * sizeof(float), cudaMemcpyDeviceToHost, stream));
    k = e;
  }
}

void HostSampledRows::apply(const Batch& b, StepOutput& out) {
  struct Forget {  // the copied rows belong to this step only, also when sampling throws
    std::vector<int32_t>& rows;
    ~Forget() { rows.clear(); }
  } forget{out_row_};
  out.top_logprobs.clear();
  if (n_host_ == 0) return;
  sub_.clear();
  for (int i = 0; i < b.n_tokens(); ++i) {
    const size_t j = static_cast<size_t>(i);
    if (!on_host_[static_cast<size_t>(b.slot[j])]) continue;
    // The host sampler's penalty window is fed with the slot's tokens, as on the CPU tail.
    if (b.tokens.size() != b.pos.size()) {
      throw Error("host sampling: slot " + std::to_string(b.slot[j]) +
                  " samples on the host, but the step carries no token ids for its penalty window");
    }
    sub_.add(b.tokens[j], b.pos[j], b.slot[j], b.logits[j] != 0);
  }
  if (sub_.n_tokens() == 0) return;
  if (sub_.n_outputs() != static_cast<int>(out_row_.size())) {
    throw Error("host sampling: " + std::to_string(sub_.n_outputs()) + " host-sampled rows in the step but " +
                std::to_string(out_row_.size()) + " copied");
  }
  const size_t n_out = out.tokens.size();
  const size_t count = out_row_.size() * static_cast<size_t>(n_vocab_);
  const std::vector<int32_t> picks = samplers_.sample(sub_, rows_.get(), count, logprobs_, top_);
  for (size_t k = 0; k < picks.size(); ++k) {
    const auto r = static_cast<size_t>(out_row_[k]);
    if (r >= n_out) {
      throw Error("host sampling: row " + std::to_string(r) + " outside the step's " + std::to_string(n_out) + " rows");
    }
    out.tokens[r] = picks[k];
    // NaN for rows whose sequence did not ask (StepOutput's convention).
    if (!logprobs_.empty()) {
      if (out.logprobs.empty()) out.logprobs.assign(n_out, std::nanf(""));
      out.logprobs[r] = logprobs_[k];
    }
    if (!top_.empty()) {
      out.top_logprobs.resize(n_out);
      out.top_logprobs[r] = std::move(top_[k]);
    }
  }
}

}  // namespace pipellm::cuda

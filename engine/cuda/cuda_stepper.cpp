#include "engine/cuda/cuda_stepper.h"

#include <algorithm>
#include <vector>

namespace pipellm::cuda {
namespace {

// Position of s in the chain, or -1 when absent.
int where(const std::vector<SamplerStage>& chain, SamplerStage s) {
  const auto it = std::find(chain.begin(), chain.end(), s);
  return it == chain.end() ? -1 : static_cast<int>(it - chain.begin());
}

}  // namespace

std::optional<SamplingParams> gpu_sampling_for(const SamplerParams& p) {
  const bool penalties = p.penalty_last_n > 0 && (p.repeat_penalty != 1.0f || p.presence_penalty != 0.0f ||
                                                  p.frequency_penalty != 0.0f);
  if (penalties) return std::nullopt;
  SamplingParams g;
  g.seed = p.seed;
  if (p.greedy()) return g;  // temperature 0: argmax
  const auto& c = p.chain;
  const int k = p.top_k > 0 ? where(c, SamplerStage::TopK) : -1;
  const int tp = p.top_p < 1.0f ? where(c, SamplerStage::TopP) : -1;
  const int mp = p.min_p > 0.0f ? where(c, SamplerStage::MinP) : -1;
  const int t = where(c, SamplerStage::Temperature);
  // The active filters in the GPU's order (absent ones are skipped).
  std::vector<int> order;
  for (int i : {k, tp, mp})
    if (i >= 0) order.push_back(i);
  if (!std::is_sorted(order.begin(), order.end())) return std::nullopt;
  const int first_scaled = std::min(tp < 0 ? 1 << 20 : tp, mp < 0 ? 1 << 20 : mp);
  const int last_filter = order.empty() ? -1 : order.back();
  g.temperature = p.temperature;
  g.top_k = k >= 0 ? p.top_k : 0;
  g.top_p = tp >= 0 ? p.top_p : 1.0f;
  g.min_p = mp >= 0 ? p.min_p : 0.0f;
  if (t < 0) return std::nullopt;  // no temperature stage: the host samples at T = 1
  if (t < first_scaled) return g;   // temperature before top_p and min_p
  if (t > last_filter) {
    g.temperature_last = true;
    return g;
  }
  return std::nullopt;
}

}  // namespace pipellm::cuda

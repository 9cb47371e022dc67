#include "flags/sampler_flags.h"

#include <algorithm>

namespace pipellm::flags {

SamplerParams apply_sampling_flags(const SamplingFlags& f, SamplerParams s) {
  if (f.temperature) s.temperature = *f.temperature;
  if (f.top_k) s.top_k = *f.top_k;
  if (f.top_p) s.top_p = *f.top_p;
  if (f.min_p) s.min_p = *f.min_p;
  if (f.repeat_penalty) s.repeat_penalty = *f.repeat_penalty;
  if (f.repeat_last_n) s.penalty_last_n = *f.repeat_last_n;
  if (f.presence_penalty) s.presence_penalty = *f.presence_penalty;
  if (f.frequency_penalty) s.frequency_penalty = *f.frequency_penalty;
  if (!f.samplers.empty()) {
    std::string chain = f.samplers;  // llama.cpp separates with ';'
    std::replace(chain.begin(), chain.end(), ';', ',');
    s.chain = SamplerParams::parse_chain(chain);
  }
  return s;
}

}  // namespace pipellm::flags

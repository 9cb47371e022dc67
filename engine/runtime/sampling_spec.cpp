#include "engine/runtime/sampling_spec.h"

namespace pipellm {

bool SamplingSpec::operator==(const SamplingSpec& o) const {
  return temperature == o.temperature && top_k == o.top_k && top_p == o.top_p && min_p == o.min_p &&
         repeat_penalty == o.repeat_penalty && frequency_penalty == o.frequency_penalty &&
         presence_penalty == o.presence_penalty && penalty_last_n == o.penalty_last_n && seed == o.seed;
}

SamplerParams sampler_params(const SamplingSpec& s) {
  SamplerParams p;
  p.temperature = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.min_p = s.min_p;
  p.repeat_penalty = s.repeat_penalty;
  p.presence_penalty = s.presence_penalty;
  p.frequency_penalty = s.frequency_penalty;
  p.penalty_last_n = s.penalty_last_n;
  p.seed = s.seed;
  return p;
}

}  // namespace pipellm

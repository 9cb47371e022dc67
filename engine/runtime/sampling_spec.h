// The sampling settings of one request as they travel (coordinator link, pipeline step headers):
// plain fields only. The tail (or a one-process head) builds its Sampler from them.
#pragma once
#include <cstdint>

#include "engine/runtime/sampler.h"

namespace pipellm {

// temperature <= 0: greedy (argmax).
struct SamplingSpec {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repeat_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int32_t penalty_last_n = 64;
  uint64_t seed = 0;
  bool operator==(const SamplingSpec& o) const;
};

// The sampler chain for these settings (the default chain order).
SamplerParams sampler_params(const SamplingSpec& s);

}  // namespace pipellm

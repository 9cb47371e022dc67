// The plain generation loop, written independently of the runtime (no Scheduler, StageRunner or
// per-slot samplers): forward() over the prompt in chunks, then engine/runtime's Sampler on the
// host logits and forward() one token at a time, in KV slot 0. Served and runtime outputs are
// checked against it (and it against llama.cpp's greedy continuations elsewhere).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/model/stage.h"
#include "engine/runtime/sampler.h"
#include "engine/runtime/sampling_spec.h"

namespace pipellm::test {

inline std::vector<int32_t> reference_generate(Stage& m, const std::vector<int32_t>& prompt, int max_tokens,
                                               const SamplingSpec& spec, int chunk = 512) {
  Sampler sampler(sampler_params(spec), m.config().n_vocab);
  std::vector<float> logits;
  for (size_t i = 0; i < prompt.size(); i += static_cast<size_t>(chunk)) {
    const size_t n = std::min(prompt.size() - i, static_cast<size_t>(chunk));
    const std::vector<int32_t> part(prompt.begin() + static_cast<long>(i), prompt.begin() + static_cast<long>(i + n));
    for (int32_t t : part) sampler.accept(t);
    m.forward(Batch::sequence(part, static_cast<int32_t>(i), 0), logits);
  }
  std::vector<int32_t> out;
  int pos = static_cast<int>(prompt.size());
  while (static_cast<int>(out.size()) < max_tokens) {
    const int32_t t = sampler.sample(logits.data());
    out.push_back(t);
    if (static_cast<int>(out.size()) == max_tokens || pos >= m.n_ctx()) break;
    sampler.accept(t);
    m.forward(Batch::sequence({t}, pos++, 0), logits);
  }
  return out;
}

}  // namespace pipellm::test

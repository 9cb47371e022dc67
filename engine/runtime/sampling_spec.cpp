#include "engine/runtime/sampling_spec.h"

#include <string>

#include "base/error.h"

namespace pipellm {

bool SamplingSpec::operator==(const SamplingSpec& o) const {
  return temperature == o.temperature && top_k == o.top_k && top_p == o.top_p && min_p == o.min_p &&
         repeat_penalty == o.repeat_penalty && frequency_penalty == o.frequency_penalty &&
         presence_penalty == o.presence_penalty && penalty_last_n == o.penalty_last_n && seed == o.seed &&
         chain == o.chain && logprobs == o.logprobs && top_logprobs == o.top_logprobs && grammar == o.grammar && grammar_vocab == o.grammar_vocab &&
         cache_prompt == o.cache_prompt;
}

std::vector<SamplerStage> unpack_chain(uint32_t chain) {
  if (chain == 0) return SamplerParams{}.chain;
  std::vector<SamplerStage> out;
  for (uint32_t c = chain; c != 0; c >>= 4) {
    const uint32_t v = c & 0xfu;
    if (v < 1 || v > 4 || out.size() == 4) throw InvalidArgument("sampling: malformed chain code " + std::to_string(chain));
    out.push_back(static_cast<SamplerStage>(v - 1));
  }
  return out;
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
  p.chain = unpack_chain(s.chain);
  p.grammar = s.grammar;
  p.grammar_vocab = s.grammar_vocab;
  return p;
}

SamplingSpec sampling_spec(const SamplerParams& p) {
  SamplingSpec s;
  s.temperature = p.temperature;
  s.top_k = p.top_k;
  s.top_p = p.top_p;
  s.min_p = p.min_p;
  s.repeat_penalty = p.repeat_penalty;
  s.presence_penalty = p.presence_penalty;
  s.frequency_penalty = p.frequency_penalty;
  s.penalty_last_n = p.penalty_last_n;
  s.seed = p.seed;
  s.grammar = p.grammar;
  s.grammar_vocab = p.grammar_vocab;
  if (p.chain != SamplerParams{}.chain) {
    for (size_t k = 0; k < p.chain.size() && k < 8; ++k) s.chain |= (static_cast<uint32_t>(p.chain[k]) + 1u) << (4 * k);
  }
  return s;
}

}  // namespace pipellm

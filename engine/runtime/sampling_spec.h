// The sampling settings of one request, the one type from the front doors (HTTP, gRPC, CLI) to
// the sampler: plain fields, so they travel as they are (coordinator link, pipeline step
// headers), except the grammar's vocabulary, a process-local pointer. The tail builds its
// sampler from them: engine/runtime's Sampler on the host, the per-slot device settings of
// kernels/cuda/sampling.h on a GPU (which takes no grammar and lists no alternatives: a CUDA
// tail samples those sequences with the host Sampler, engine/cuda/host_sampled_rows.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/runtime/sampler.h"

namespace pipellm {

// The most alternatives a request may ask for per generated token (OpenAI's top_logprobs limit);
// decoders of the link and step messages refuse more, so a frame cannot make them allocate more.
constexpr int32_t kMaxTopLogprobs = 20;

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
  // Filter order, packed: stage k (SamplerStage value + 1) in bits [4k, 4k + 4); 0 = the default
  // order top_k, top_p, min_p, temperature.
  uint32_t chain = 0;
  // Report each sampled token's log-probability: natural log of its probability under the
  // softmax of the logits after penalties, at temperature 1 (the model's own distribution).
  bool logprobs = false;
  // Also report the top_logprobs most likely tokens of that same distribution with their
  // log-probabilities (0: none; at most kMaxTopLogprobs). Only the host sampler computes them
  // (a CUDA tail samples such sequences on the host).
  int32_t top_logprobs = 0;
  // Structured output: GBNF text the output must match ("" for none). Front doors compile a
  // JSON schema to it (grammar/json_schema.h: json_schema_to_gbnf) where they parse the request.
  std::string grammar;
  // The token texts the grammar is matched against (grammar/token_vocabulary.h), built once per
  // model from its tokenizer and shared. Needed where the sampler runs; it does not travel, so
  // the process that samples attaches it.
  std::shared_ptr<const grammar::TokenVocabulary> grammar_vocab;
  // llama-server's cache_prompt: the prompt may reuse a slot's cached prefix (scheduler.h). Like
  // llama-server's, such a prompt's logits match a fresh run's within rounding, not bit for bit
  // (the prefix was computed in other steps); false feeds the whole prompt.
  bool cache_prompt = true;
  bool operator==(const SamplingSpec& o) const;
};

// The Sampler's parameters for these settings, and back.
SamplerParams sampler_params(const SamplingSpec& s);
SamplingSpec sampling_spec(const SamplerParams& p);
// The filter order `chain` stands for (throws InvalidArgument for a malformed code).
std::vector<SamplerStage> unpack_chain(uint32_t chain);

}  // namespace pipellm

// The generation loop for one sequence on a whole-model Stage: prefill the prompt (in chunks),
// then sample and decode one token at a time until an end-of-generation token, a stop string,
// the token limit or the end of the context. Text is optional (hooks); ids always come back.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/model/stage.h"
#include "engine/runtime/sampler.h"

namespace pipellm {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 128;
  SamplerParams sampling;
  std::vector<std::string> stop_strings;  // need hooks.piece
  int prefill_chunk = 512;                // prompt tokens per forward call
};

enum class StopReason { MaxTokens, EndOfGeneration, StopString, ContextFull, Cancelled };
const char* stop_reason_name(StopReason r);

struct TextHooks {
  std::function<bool(int32_t)> is_eog;          // end-of-generation ids (EOS, EOT, ...); null: none
  std::function<std::string(int32_t)> piece;    // streaming detokenizer; null: no text
  std::function<std::string()> flush;           // the detokenizer's held-back tail at the end
};

// Called once per generated token with the text that became visible (may be empty). Return
// false to stop (StopReason::Cancelled). At the end, text that was held back in case it began a
// stop string is passed with token -1.
using TokenCallback = std::function<bool(int32_t token, const std::string& text)>;

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (an end-of-generation id is not included)
  std::string text;
  StopReason reason = StopReason::MaxTokens;
  int n_prompt = 0;
  double prompt_seconds = 0.0;
  double gen_seconds = 0.0;  // sampling + decoding of the generated tokens
};

// A device path that decodes one token and samples the next itself (a GPU's graph-replayed
// decode step with its own sampler): step(token, pos, slot) runs `token` at `pos` of `slot` and
// returns the sampled next token, so only ids cross to the host.
class TokenStepper {
 public:
  virtual ~TokenStepper() = default;
  virtual int32_t step(int32_t token, int pos, int slot) = 0;
};

// `model` must be first and last (a whole model). Uses KV slot `slot` from position 0.
// Throws InvalidArgument when the prompt is empty or does not fit the context.
// With a stepper, the prompt is still prefilled with model.forward() and the first token
// sampled on the host from its logits; every later token comes from stepper->step() (the
// caller makes sure the stepper samples as req.sampling asks and needs no penalty window).
GenerationResult generate(Stage& model, int slot, const GenerationRequest& req, const TextHooks& hooks,
                          const TokenCallback& on_token = nullptr, TokenStepper* stepper = nullptr);

}  // namespace pipellm

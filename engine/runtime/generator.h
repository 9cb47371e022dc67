// One sequence on a whole-model Stage, through the same runtime as every served request
// (engine/pipeline's Scheduler and StageRunner with one rank): prefill the prompt in chunks, then
// decode one token at a time (sampled by the stage: on the GPU for a CUDA stage) until an
// end-of-generation token, a stop string, the token limit or the end of the context. Text is
// optional (hooks); ids always come back.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/model/stage.h"
#include "engine/runtime/sampling_spec.h"

namespace pipellm {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 128;
  SamplingSpec sampling;
  std::vector<std::string> stop_strings;  // need hooks.piece
  int prefill_chunk = 512;                // prompt tokens per forward call
  // In/out: the tokens the model's slot 0 holds from an earlier call on the same stage (a chat's
  // previous turns): a prompt starting with them is fed only the rest (scheduler.h). Null: none.
  std::vector<int32_t>* slot_cache = nullptr;
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
  int n_cached = 0;             // of them, held by the slot (req.slot_cache) and not fed
  double prompt_seconds = 0.0;  // until the first token: prefill and its sampling
  double gen_seconds = 0.0;     // the tokens after the first one
  // Decode rate: the tokens after the first over the time they took.
  double decode_tok_s() const { return tokens.size() > 1 ? (tokens.size() - 1) / std::max(gen_seconds, 1e-9) : 0.0; }
};

// `model` must be first and last (a whole model); the sequence takes its first KV slot.
// Throws InvalidArgument when the prompt is empty or does not fit the context, or for bad
// sampling settings.
GenerationResult generate(Stage& model, const GenerationRequest& req, const TextHooks& hooks,
                          const TokenCallback& on_token = nullptr);

}  // namespace pipellm

#include "engine/runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "engine/runtime/stop_strings.h"
#include "engine/util/error.h"

namespace pipellm {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::EndOfGeneration: return "eog";
    case StopReason::StopString: return "stop_string";
    case StopReason::ContextFull: return "context_full";
    case StopReason::Cancelled: return "cancelled";
  }
  return "?";
}

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerationResult generate(Stage& model, int slot, const GenerationRequest& req, const TextHooks& hooks,
                          const TokenCallback& on_token, TokenStepper* stepper) {
  if (!model.is_first() || !model.is_last()) throw InvalidArgument("generate: needs a whole-model stage");
  const int n_prompt = static_cast<int>(req.prompt.size());
  if (n_prompt == 0) throw InvalidArgument("generate: empty prompt");
  if (n_prompt >= model.n_ctx()) {
    throw InvalidArgument("generate: the prompt has " + std::to_string(n_prompt) +
                          " tokens, more than the context allows (" + std::to_string(model.n_ctx()) +
                          " tokens, at least one of them for generation)");
  }
  if (req.max_tokens < 0) throw InvalidArgument("generate: max_tokens must be >= 0");
  const int V = model.config().n_vocab;

  GenerationResult res;
  res.n_prompt = n_prompt;
  Sampler sampler(req.sampling, V);
  for (int32_t t : req.prompt) sampler.accept(t);
  StopStringFilter stops(req.stop_strings);

  // Prefill.
  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits;
  const int chunk = std::max(1, req.prefill_chunk);
  for (int i = 0; i < n_prompt; i += chunk) {
    const int n = std::min(chunk, n_prompt - i);
    std::vector<int32_t> part(req.prompt.begin() + i, req.prompt.begin() + i + n);
    model.forward(Batch::sequence(part, i, slot), logits);
  }
  res.prompt_seconds = seconds_since(t0);

  // Decode.
  t0 = std::chrono::steady_clock::now();
  int pos = n_prompt;
  res.reason = StopReason::MaxTokens;
  int32_t stepped = -1;  // the token the stepper sampled in the previous step
  for (int step = 0; step < req.max_tokens; ++step) {
    const int32_t tok = stepper && step > 0 ? stepped : sampler.sample(logits.data());
    if (hooks.is_eog && hooks.is_eog(tok)) {
      res.reason = StopReason::EndOfGeneration;
      break;
    }
    sampler.accept(tok);
    res.tokens.push_back(tok);
    std::string visible;
    if (hooks.piece) {
      visible = stops.push(hooks.piece(tok));
      res.text += visible;
    }
    const bool keep_going = !on_token || on_token(tok, visible);
    if (stops.stopped()) {
      res.reason = StopReason::StopString;
      break;
    }
    if (!keep_going) {
      res.reason = StopReason::Cancelled;
      break;
    }
    if (step + 1 == req.max_tokens) break;
    if (pos >= model.n_ctx()) {
      res.reason = StopReason::ContextFull;
      break;
    }
    if (stepper) stepped = stepper->step(tok, pos++, slot);
    else model.forward(Batch::sequence({tok}, pos++, slot), logits);
  }
  if (res.reason != StopReason::StopString) {
    const std::string rest = (hooks.flush ? stops.push(hooks.flush()) : std::string()) + stops.flush();
    if (!rest.empty()) {
      res.text += rest;
      if (on_token) on_token(-1, rest);
    }
  }
  res.gen_seconds = seconds_since(t0);
  return res;
}

}  // namespace pipellm

#include "engine/runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "base/error.h"
#include "engine/pipeline/inproc_transport.h"
#include "engine/pipeline/scheduler.h"
#include "engine/pipeline/stage_factory.h"
#include "engine/pipeline/stage_runner.h"
#include "engine/runtime/stop_strings.h"

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

GenerationResult generate(Stage& model, const GenerationRequest& req, const TextHooks& hooks,
                          const TokenCallback& on_token) {
  if (!model.is_first() || !model.is_last()) throw InvalidArgument("generate: needs a whole-model stage");
  const int n_prompt = static_cast<int>(req.prompt.size());
  if (n_prompt == 0) throw InvalidArgument("generate: empty prompt");
  if (n_prompt >= model.n_ctx()) {
    throw InvalidArgument("generate: the prompt has " + std::to_string(n_prompt) +
                          " tokens, more than the context allows (" + std::to_string(model.n_ctx()) +
                          " tokens, at least one of them for generation)");
  }
  if (req.max_tokens < 0) throw InvalidArgument("generate: max_tokens must be >= 0");
  sampler_params(req.sampling).validate();

  GenerationResult res;
  res.n_prompt = n_prompt;
  res.reason = StopReason::MaxTokens;
  if (req.max_tokens == 0) return res;

  SchedulerOptions so;
  so.n_slots = 1;
  so.n_ctx = model.n_ctx();
  so.prefill_chunk = req.prefill_chunk;
  so.max_batch_tokens = req.prefill_chunk;  // one chunk per step, as a lone sequence needs
  Scheduler sched(fit_to_stage(so, model));
  Request r;
  r.id = 1;
  r.prompt = req.prompt;
  r.max_new_tokens = req.max_tokens;
  r.sampling = req.sampling;
  if (req.slot_cache) sched.set_cached(0, *req.slot_cache);
  sched.submit(r);

  InprocHub hub(1);
  InprocTransport transport(hub, 0);
  StageRunner runner(model, transport);
  StopStringFilter stops(req.stop_strings);
  const auto t0 = std::chrono::steady_clock::now();
  auto t_first = t0;
  bool ended = false;
  runner.run_head(sched, [&](const TokenEvent& e) {
    if (ended) return;
    if (e.index == 0) t_first = std::chrono::steady_clock::now();
    const auto end = [&](StopReason why) {
      res.reason = why;
      ended = true;
      sched.cancel(r.id);
    };
    if (hooks.is_eog && hooks.is_eog(e.token)) return end(StopReason::EndOfGeneration);
    res.tokens.push_back(e.token);
    std::string visible;
    if (hooks.piece) {
      visible = stops.push(hooks.piece(e.token));
      res.text += visible;
    }
    const bool keep_going = !on_token || on_token(e.token, visible);
    if (stops.stopped()) return end(StopReason::StopString);
    if (!keep_going) return end(StopReason::Cancelled);
    if (e.finish == FinishReason::Context) res.reason = StopReason::ContextFull;
  });
  if (res.reason != StopReason::StopString) {
    const std::string rest = (hooks.flush ? stops.push(hooks.flush()) : std::string()) + stops.flush();
    if (!rest.empty()) {
      res.text += rest;
      if (on_token) on_token(-1, rest);
    }
  }
  if (req.slot_cache) *req.slot_cache = sched.cached(0);
  res.n_cached = static_cast<int>(sched.reused_tokens());
  res.prompt_seconds = std::chrono::duration<double>(t_first - t0).count();
  res.gen_seconds = seconds_since(t_first);
  return res;
}

}  // namespace pipellm

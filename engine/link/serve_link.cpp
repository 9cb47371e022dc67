#include "engine/link/serve_link.h"

#include "engine/link/progress_watch.h"
#include "engine/link/scheduler_bridge.h"
#include "engine/tokenizer/tokenizer.h"

namespace pipellm::link {

HelloMsg hello_for(const Stage& head_stage, const std::string& model_name, int n_ctx, int max_sequences, int n_stages,
                   const std::string& plan) {
  HelloMsg h;
  const ModelConfig& c = head_stage.config();
  h.model_name = model_name;
  h.arch = arch_name(c.arch);
  h.n_vocab = c.n_vocab;
  h.n_layer = c.n_layer;
  h.n_embd = c.n_embd;
  h.n_ctx = n_ctx;
  h.max_sequences = max_sequences;
  h.n_stages = n_stages;
  h.plan = plan;
  return h;
}

GrammarSupport grammar_support(const GgufFile& file) {
  GrammarSupport g;
  try {
    g.vocab = grammar::TokenVocabulary::from_tokenizer(*Tokenizer::from_gguf(file));
  } catch (const Error& e) {
    // "grammar: ..." so that the HTTP door's 400 names the field (param_of reads the prefix).
    g.refusal = std::string("grammar: structured output needs the model's tokenizer: ") + e.what();
  }
  return g;
}

ServeResult serve_link(StageRunner& runner, HeadLink& head, const SchedulerOptions& so, int n_vocab,
                       const ServeOptions& o) {
  Scheduler sched(so);
  SchedulerBridge bridge(sched, head, n_vocab, so.n_ctx);
  if (o.stats) bridge.set_stats_source(o.stats);
  bridge.refuse_grammars(o.grammar_refusal);
  ProgressWatch watch(head, o.n_stages, o.heartbeat, o.diagnose);
  ServeResult res;
  res.stats = runner.serve_head(
      sched, [&](const TokenEvent& e) { bridge.on_token(e); },
      [&](std::chrono::milliseconds wait) {
        if (o.stop != nullptr && o.stop->load()) return false;
        const std::vector<StageStatsMsg> st = o.stats ? o.stats() : std::vector<StageStatsMsg>{};
        if (st.empty()) {
          watch.enter_poll(0, 0, 0.0);  // alive and polling; no step counts to report
        } else {
          watch.enter_poll(st.front().steps, st.back().steps, st.front().step_seconds);
        }
        const bool go_on = bridge.poll(wait);
        watch.leave_poll();
        return go_on;
      });
  res.end_reason = o.stop != nullptr && o.stop->load() && bridge.end_reason().empty() ? "stopped" : bridge.end_reason();
  res.link_failed = bridge.link_failed();
  return res;
}

}  // namespace pipellm::link

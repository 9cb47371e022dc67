#include "engine/link/serve_link.h"

#include "engine/link/scheduler_bridge.h"

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

ServeResult serve_link(StageRunner& runner, HeadLink& head, const SchedulerOptions& so, int n_vocab,
                       const std::function<std::vector<StageStatsMsg>()>& stats, const std::atomic<bool>* stop) {
  Scheduler sched(so);
  SchedulerBridge bridge(sched, head, n_vocab, so.n_ctx);
  if (stats) bridge.set_stats_source(stats);
  ServeResult res;
  res.stats = runner.serve_head(
      sched, [&](const TokenEvent& e) { bridge.on_token(e); },
      [&](std::chrono::milliseconds wait) {
        if (stop != nullptr && stop->load()) return false;
        return bridge.poll(wait);
      });
  res.end_reason = stop != nullptr && stop->load() && bridge.end_reason().empty() ? "stopped" : bridge.end_reason();
  res.link_failed = bridge.link_failed();
  return res;
}

}  // namespace pipellm::link

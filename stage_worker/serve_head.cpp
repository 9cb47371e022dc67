#include "stage_worker/serve_head.h"

#include <cstdio>

#include "engine/link/coordinator_link.h"
#include "engine/link/scheduler_bridge.h"

namespace pipellm {

std::string plan_summary(const PartitionPlan& plan) {
  std::string s;
  for (size_t r = 0; r < plan.stages.size(); ++r) {
    const StagePlan& p = plan.stages[r];
    s += (r ? " rank" : "rank") + std::to_string(r) + ":[" + std::to_string(p.first) + "," + std::to_string(p.last) + ")";
  }
  return s;
}

std::vector<link::StageStatsMsg> stage_stats_messages(const std::vector<RankStats>& stats, const PipelineConfig& cfg) {
  std::vector<link::StageStatsMsg> out;
  out.reserve(stats.size());
  for (const RankStats& s : stats) {
    link::StageStatsMsg m;
    m.rank = s.rank;
    m.device = s.rank < cfg.n_stages() ? cfg.stages[static_cast<size_t>(s.rank)].device : "unknown";
    m.steps = s.steps;
    m.step_seconds = s.step_seconds;
    m.transfer_seconds = s.transfer_seconds;
    m.gpu_bytes = s.device_bytes;
    out.push_back(std::move(m));
  }
  return out;
}

int serve_coordinator(StageRunner& runner, const Stage& head_stage, const PipelineConfig& cfg, const PartitionPlan& plan,
                      const std::string& address, bool quiet) {
  const ModelConfig& mc = head_stage.config();
  link::HelloMsg hello;
  hello.model_name = cfg.model.substr(cfg.model.find_last_of('/') + 1);
  hello.arch = arch_name(mc.arch);
  hello.n_vocab = mc.n_vocab;
  hello.n_layer = mc.n_layer;
  hello.n_embd = mc.n_embd;
  hello.n_ctx = cfg.context_length;
  hello.max_sequences = cfg.max_sequences;
  hello.n_stages = cfg.n_stages();
  hello.plan = plan_summary(plan);
  auto head = link::HeadLink::connect(address, hello, 30000);
  if (!quiet) std::fprintf(stderr, "pipellm-stage: rank 0 serving the coordinator at %s (%s)\n", address.c_str(), hello.plan.c_str());

  SchedulerOptions so;
  so.n_slots = cfg.max_sequences;
  so.n_ctx = cfg.context_length;
  so.micro_batches = cfg.micro_batches;
  so.max_batch_tokens = cfg.max_batch_tokens;
  so.prefill_chunk = cfg.prefill_chunk;
  Scheduler sched(so);
  link::SchedulerBridge bridge(sched, *head, mc.n_vocab, cfg.context_length);
  bridge.set_stats_source([&] { return stage_stats_messages(runner.stage_stats(), cfg); });
  const HeadStats st = runner.serve_head(
      sched, [&](const TokenEvent& e) { bridge.on_token(e); },
      [&](std::chrono::milliseconds wait) { return bridge.poll(wait); });
  if (!quiet || bridge.link_failed()) {
    std::fprintf(stderr, "pipellm-stage: rank 0 stops serving (%s) after %lld steps, %lld tokens generated\n",
                 bridge.end_reason().c_str(), static_cast<long long>(st.steps), static_cast<long long>(st.generated_tokens));
  }
  return bridge.link_failed() ? 1 : 0;
}

}  // namespace pipellm

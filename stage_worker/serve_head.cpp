#include "stage_worker/serve_head.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/link/serve_link.h"
#include "engine/pipeline/stage_factory.h"

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

std::string stuck_rank_diagnosis(const std::vector<RankProcess>& ranks, const std::string& host,
                                 const heartbeat::HeartbeatRegistry* beats, bool use_proc) {
  const std::vector<heartbeat::RankNote> proc = use_proc ? stuck_rank_notes(ranks, host) : std::vector<heartbeat::RankNote>{};
  const std::vector<heartbeat::RankNote> beat =
      beats != nullptr ? beats->judge(heartbeat::Clock::now()) : std::vector<heartbeat::RankNote>{};
  return heartbeat::merge_notes(proc, beat);
}

int serve_coordinator(StageRunner& runner, const Stage& head_stage, const PipelineConfig& cfg, const PartitionPlan& plan,
                      const std::string& address, bool quiet, const std::vector<RankProcess>& ranks,
                      const std::string& host, const std::string& grammar_refusal,
                      const heartbeat::HeartbeatRegistry* beats) {
  link::HelloMsg hello = link::hello_for(head_stage, cfg.model.substr(cfg.model.find_last_of('/') + 1),
                                         cfg.context_length, cfg.max_sequences, cfg.n_stages(), plan_summary(plan));
  hello.secret = link::link_secret_from_env();  // the coordinator's, for this launch
  if (hello.secret.empty()) {
    throw InvalidArgument(std::string("--coordinator: $") + link::kLinkSecretEnv +
                          " is not set (the coordinator sets it when it launches the stages; for --backend attach "
                          "export the coordinator's secret)");
  }
  auto head = link::HeadLink::connect(address, hello, 30000);
  if (!quiet) std::fprintf(stderr, "pipellm-stage: rank 0 serving the coordinator at %s (%s)\n", address.c_str(), hello.plan.c_str());
  link::ServeOptions so;
  so.stats = [&] { return stage_stats_messages(runner.stage_stats(), cfg); };
  const char* no_proc = std::getenv(kDiagnoseNoProcEnv);
  const bool use_proc = no_proc == nullptr || std::strcmp(no_proc, "") == 0 || std::strcmp(no_proc, "0") == 0;
  so.diagnose = [&ranks, &host, beats, use_proc] { return stuck_rank_diagnosis(ranks, host, beats, use_proc); };
  so.n_stages = cfg.n_stages();
  so.grammar_refusal = grammar_refusal;
  const link::ServeResult r =
      link::serve_link(runner, *head, scheduler_options(cfg, head_stage), head_stage.config().n_vocab, so);
  if (!quiet || r.link_failed) {
    std::fprintf(stderr, "pipellm-stage: rank 0 stops serving (%s) after %lld steps, %lld tokens generated\n",
                 r.end_reason.c_str(), static_cast<long long>(r.stats.steps), static_cast<long long>(r.stats.generated_tokens));
  }
  return r.link_failed ? 1 : 0;
}

}  // namespace pipellm

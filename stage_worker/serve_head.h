// `pipellm-stage --coordinator ADDR`, rank 0: connects to pipellm-coordinator over the link
// (engine/link), says Hello (model sizes from the config, the layer plan) and serves the
// coordinator's requests through the pipeline: StageRunner::serve_head with a SchedulerBridge
// between the link and the head's Scheduler. The other ranks run their usual follower loop.
#pragma once
#include <string>
#include <vector>

#include "engine/link/messages.h"

#include "engine/pipeline/partition_planner.h"
#include "engine/pipeline/pipeline_config.h"
#include "engine/pipeline/stage_runner.h"
#include "stage_worker/rank_processes.h"

namespace pipellm {

// "rank0:[0,4) rank1:[4,8)": the plan as the coordinator shows it.
std::string plan_summary(const PartitionPlan& plan);

// The StageStats the head reports: the runner's per-rank totals, devices from the config.
std::vector<link::StageStatsMsg> stage_stats_messages(const std::vector<RankStats>& stats, const PipelineConfig& cfg);

// Serves until the coordinator sends Shutdown (returns 0) or goes away (returns 1); the
// followers get Shutdown either way. Errors of the pipeline throw (the caller aborts every rank).
// `ranks` (gather_rank_processes) lets the heartbeat name a stuck rank on this host.
// `grammar_refusal` (link::grammar_support): why the tail cannot serve grammars, "" if it can.
int serve_coordinator(StageRunner& runner, const Stage& head_stage, const PipelineConfig& cfg, const PartitionPlan& plan,
                      const std::string& address, bool quiet, const std::vector<RankProcess>& ranks,
                      const std::string& host, const std::string& grammar_refusal);

}  // namespace pipellm

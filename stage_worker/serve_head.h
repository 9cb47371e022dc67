// `pipellm-stage --coordinator ADDR`, rank 0: connects to pipellm-coordinator over the link
// (engine/link), says Hello (model sizes from the config, the layer plan) and serves the
// coordinator's requests through the pipeline: StageRunner::serve_head with a SchedulerBridge
// between the link and the head's Scheduler. The other ranks run their usual follower loop.
#pragma once
#include <string>
#include <vector>

#include "engine/link/messages.h"

#include "engine/pipeline/partition_planner.h"
#include "engine/pipeline/rank_heartbeat.h"
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
// When steps are overdue the head names the rank holding them up (stuck_rank_diagnosis).
// `grammar_refusal` (link::grammar_support): why the tail cannot serve grammars, "" if it can.
int serve_coordinator(StageRunner& runner, const Stage& head_stage, const PipelineConfig& cfg, const PartitionPlan& plan,
                      const std::string& address, bool quiet, const std::vector<RankProcess>& ranks,
                      const std::string& host, const std::string& grammar_refusal,
                      const heartbeat::HeartbeatRegistry* beats = nullptr);

// Test switch: set (to anything but "" or "0"), the head does not read /proc for its diagnosis,
// so that the heartbeat path is exercised on one host.
constexpr const char* kDiagnoseNoProcEnv = "PIPELLM_DIAGNOSE_NO_PROC";

// Which ranks hold the pipeline up, as the head tells the coordinator: per rank, /proc's word
// for ranks on `host` (gather_rank_processes; unless `use_proc` is false), else the heartbeats'
// (`beats`, may be null: ranks on other hosts, or whose beats stopped); "" when neither knows.
std::string stuck_rank_diagnosis(const std::vector<RankProcess>& ranks, const std::string& host,
                                 const heartbeat::HeartbeatRegistry* beats, bool use_proc);

}  // namespace pipellm

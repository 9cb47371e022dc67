// Building the Stage of one pipeline rank from the config and the plan. The CPU backend lives
// here (the engine library); the stage worker adds the CUDA backend when it is built
// (stage_worker/stage_factory.cpp), so both plug into the same StageRunner.
#pragma once
#include <memory>

#include "engine/cpu/cpu_stage.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"
#include "engine/pipeline/partition_planner.h"
#include "engine/pipeline/pipeline_config.h"
#include "engine/pipeline/scheduler.h"

namespace pipellm {

struct StageSetup {
  const GgufFile& file;
  const ModelConfig& model;
  const PipelineConfig& pipeline;
  const StagePlan& plan;
};

CpuStageOptions cpu_stage_options(const PipelineConfig& c);
std::unique_ptr<Stage> make_cpu_stage(const StageSetup& s, ThreadPool& pool);
// Steps no larger than the head stage takes: max_batch_tokens and prefill_chunk clamped to it;
// prompt prefixes reused as far as the model's caches allow (ModelConfig::prefix_reuse_limit).
SchedulerOptions fit_to_stage(SchedulerOptions so, const Stage& head);
constexpr int kMinReusedPrefix = 32;  // SchedulerOptions::reuse_min of the programs
// The head's scheduler settings from the config (fitted to the stage).
SchedulerOptions scheduler_options(const PipelineConfig& c, const Stage& head);

}  // namespace pipellm

#include "engine/pipeline/stage_factory.h"

#include <algorithm>

namespace pipellm {

CpuStageOptions cpu_stage_options(const PipelineConfig& c) {
  CpuStageOptions o;
  o.n_ctx = c.context_length;
  o.n_slots = c.max_sequences;
  o.kv_type = c.kv_cache_type == KvType::F16 ? TensorType::F16 : TensorType::F32;
  return o;
}

std::unique_ptr<Stage> make_cpu_stage(const StageSetup& s, ThreadPool& pool) {
  return std::make_unique<CpuStage>(s.file, s.model, LayerRange{s.plan.first, s.plan.last}, s.plan.has_embeddings,
                                    s.plan.has_output, cpu_stage_options(s.pipeline), pool);
}

SchedulerOptions scheduler_options(const PipelineConfig& c, const Stage& head) {
  SchedulerOptions so;
  so.n_slots = c.max_sequences;
  so.n_ctx = c.context_length;
  so.micro_batches = c.micro_batches;
  so.max_batch_tokens = std::min(c.max_batch_tokens, head.max_step_tokens());
  so.prefill_chunk = std::min(c.prefill_chunk, so.max_batch_tokens);
  return so;
}

}  // namespace pipellm

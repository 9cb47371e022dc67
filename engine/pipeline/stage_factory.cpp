#include "engine/pipeline/stage_factory.h"

#include <algorithm>

namespace pipellm {

CpuStageOptions cpu_stage_options(const PipelineConfig& c) {
  CpuStageOptions o;
  o.n_ctx = c.context_length;
  o.n_slots = c.max_sequences;
  o.kv_type = kv_tensor_type(c.kv_cache_type);
  o.kv_type_k = kv_tensor_type(c.kv_cache_type_k);
  o.kv_type_v = kv_tensor_type(c.kv_cache_type_v);
  return o;
}

std::unique_ptr<Stage> make_cpu_stage(const StageSetup& s, ThreadPool& pool) {
  return std::make_unique<CpuStage>(s.file, s.model, LayerRange{s.plan.first, s.plan.last}, s.plan.has_embeddings,
                                    s.plan.has_output, cpu_stage_options(s.pipeline), pool);
}

SchedulerOptions fit_to_stage(SchedulerOptions so, const Stage& head) {
  so.max_batch_tokens = std::max(1, std::min(so.max_batch_tokens, head.max_step_tokens()));
  so.prefill_chunk = std::max(1, std::min(so.prefill_chunk, so.max_batch_tokens));
  so.reuse_prefix = true;
  so.reuse_limit = head.config().prefix_reuse_limit(so.max_batch_tokens);
  so.reuse_min = kMinReusedPrefix;
  return so;
}

SchedulerOptions scheduler_options(const PipelineConfig& c, const Stage& head) {
  SchedulerOptions so;
  so.n_slots = c.max_sequences;
  so.n_ctx = c.context_length;
  so.micro_batches = c.micro_batches;
  so.max_batch_tokens = c.max_batch_tokens;
  so.prefill_chunk = c.prefill_chunk;
  return fit_to_stage(so, head);
}

}  // namespace pipellm

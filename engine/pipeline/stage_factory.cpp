#include "engine/pipeline/stage_factory.h"

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

}  // namespace pipellm

#include "stage_worker/stage_factory.h"

#include "base/error.h"
#ifdef PIPELLM_WITH_CUDA_STAGE
#include "engine/cuda/stage_fit.h"
#endif

namespace pipellm {

std::unique_ptr<Stage> make_stage(const StageSetup& setup, const StageSpec& spec, ThreadPool& pool,
                                  const std::function<void(const std::string&)>& log) {
  if (!spec.is_gpu()) return make_cpu_stage(setup, pool);
#ifdef PIPELLM_WITH_CUDA_STAGE
  const LayerRange range{setup.plan.first, setup.plan.last};
  const ModelWeights w =
      ModelWeights::load(setup.file, setup.model, range, setup.plan.has_embeddings, setup.plan.has_output);
  cuda::CudaStageOptions o;
  o.device = spec.device_index;
  o.n_ctx = setup.pipeline.context_length;
  o.n_slots = setup.pipeline.max_sequences;
  o.max_batch_tokens = setup.pipeline.max_batch_tokens;
  o.streaming.vram_budget = spec.vram_budget;
  o.streaming.streamer.slots = setup.pipeline.prefetch.staging_buffers;
  const CpuStageOptions kv = cpu_stage_options(setup.pipeline);  // the config's KV types, mapped once
  o.kv_type_k = kv.k_type();
  o.kv_type_v = kv.v_type();
  o.host_experts = host_expert_layers(setup.model, spec.experts);
  o.host_threads = setup.pipeline.threads;
  o.expert_cache_bytes = spec.experts.cache_bytes;
  o.streaming.cpu_rows = spec.cpu_rows;
  if (log) {
    if (const std::string d = describe_host_experts(o.host_experts); !d.empty()) log("placement: " + d);
  }
  cuda::StageFitOptions fit;
  fit.override_hint = "vram_budget at " + setup.pipeline.source + ":" + std::to_string(spec.line);
  fit.reduce_hint = "context_length, max_sequences or kv_cache_type (q8_0, q4_0) in " + setup.pipeline.source;
  fit.log = log;
  return cuda::open_fitted_stage(setup.model, w, setup.plan.has_embeddings, setup.plan.has_output, o, fit);
#else
  (void)log;
  throw InvalidArgument(setup.pipeline.source + ":" + std::to_string(spec.line) + ": device " + spec.device +
                        ": this pipellm-stage was built without CUDA");
#endif
}

}  // namespace pipellm

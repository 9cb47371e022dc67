#include "coordinator/served_gpus.h"

#include "engine/model/model_config.h"
#include "engine/pipeline/partition_planner.h"

namespace pipellm::coord {
namespace {

// What the model needs on one GPU with s's sequences (the sizes of s's KV types).
uint64_t one_gpu_need(const ModelConfig& mc, const ModelSizes& sizes, const GpuPipelineSettings& s) {
  PlanInput in;
  in.n_stages = 1;
  in.kv_positions = static_cast<uint64_t>(s.n_ctx) * static_cast<uint64_t>(s.n_slots);
  in.context_length = s.n_ctx;
  in.max_sequences = s.n_slots;
  in.step_tokens = s.max_batch_tokens;
  in.scratch_bytes = PipelineConfig{}.scratch_bytes;
  if (s.experts.any()) in.host_experts = {host_expert_layers(mc, s.experts)};
  return plan_partition(sizes, in).stages.front().total();
}

}  // namespace

ServedGpus place_served_model(const GgufFile& model, const ModelConfig& mc, const GpuPlacementRequest& req,
                              const GpuPipelineSettings& s) {
  const ModelSizes sizes = ModelSizes::from_gguf(model, mc, s.kv_type_k, s.kv_type_v);
  GpuPlacementRequest r = req;
  r.model_bytes = one_gpu_need(mc, sizes, s);
  const GpuPlacement p = place_on_gpus(r, mc.n_layer);
  ServedGpus out;
  out.reason = p.reason;
  if (!p.pipeline()) {
    const int gpu = p.gpus.front();
    out.device = "cuda:" + std::to_string(gpu);
    if (s.fit_slots && static_cast<size_t>(gpu) < r.gpu_bytes.size()) {
      const uint64_t room = usable_gpu_bytes(r.gpu_bytes[static_cast<size_t>(gpu)]);
      GpuPipelineSettings t = s;
      for (const int n : {s.n_slots, 2, 1}) {
        if (n > s.n_slots) continue;
        t.n_slots = n;
        out.n_slots = n;
        if (one_gpu_need(mc, sizes, t) <= room) break;
      }
      if (out.n_slots < s.n_slots) {
        out.reason += "; " + std::to_string(out.n_slots) + " sequence(s) at once, so that the model stays on it (-np " +
                      std::to_string(s.n_slots) + " would stream layers)";
      }
    }
    return out;
  }
  out.config_file = std::make_unique<TempFile>("pipellm-gpus-", ".yaml", gpu_pipeline_config(s, p, r.gpu_bytes).to_yaml());
  out.config = PipelineConfig::load(out.config_file->path());  // what the stages will read
  return out;
}

}  // namespace pipellm::coord

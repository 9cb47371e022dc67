#include "engine/model_gen/model_plan.h"

#include <algorithm>
#include <utility>

#include "engine/model_gen/shape_metadata.h"

namespace pipellm {

uint64_t PlannedTensor::nbytes() const {
  uint64_t rows = 1;
  for (size_t d = 1; d < ne.size(); ++d) rows *= static_cast<uint64_t>(ne[d]);
  return tensor_row_bytes(type, ne[0]) * rows;
}

uint64_t planned_bytes(const std::vector<PlannedTensor>& tensors) {
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.nbytes();
  return total;
}

ModelPlan plan_model(const ModelShape& shape, const FileType& ft) {
  ModelPlan plan;
  plan.config = config_for_shape(shape);
  const ModelConfig& c = plan.config;
  // llama-quantize's MoE rules look at the model's expert count (hparams.n_expert).
  int n_expert = 0;
  for (const LayerSpec& l : c.layers) n_expert = std::max(n_expert, l.n_expert);
  struct Named {
    std::string name;
    std::vector<int64_t> ne;
  };
  std::vector<Named> layers;
  for (int il = 0; il < c.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    for (const TensorSpec& t : c.layer_tensors(il)) layers.push_back({p + t.name, t.shape});
  }
  // llama-quantize visits tensors by layer, so the attn_v-like ones count in list order.
  const int n_attn_v = static_cast<int>(
      std::count_if(layers.begin(), layers.end(), [](const Named& t) { return is_attn_v_like(t.name); }));
  int attn_v_seen = 0;
  auto add = [&](std::string name, std::vector<int64_t> ne) {
    AttnVSlot slot;
    if (is_attn_v_like(name)) slot = {attn_v_seen++, n_attn_v};
    const TensorType t = choose_tensor_type(name, ne, c.n_layer, ft, !c.tied_output, n_expert, slot);
    plan.tensors.push_back({std::move(name), t, std::move(ne)});
  };
  const int64_t E = c.n_embd, V = c.n_vocab;
  add("token_embd.weight", {E, V});
  if (c.per_layer_input > 0) {
    // gemma4's per-layer inputs (ModelWeights::load binds these).
    const int64_t LP = int64_t{c.n_layer} * c.per_layer_input;
    add("per_layer_token_embd.weight", {LP, V});
    add("per_layer_model_proj.weight", {E, LP});
    add("per_layer_proj_norm.weight", {c.per_layer_input});
  }
  // rope_freqs.weight: gemma4's proportional rope (no llama 3.1-style scaling is generated).
  if (c.has_rope_freqs) add("rope_freqs.weight", {c.n_rot / 2});
  for (Named& t : layers) add(std::move(t.name), std::move(t.ne));
  add("output_norm.weight", {E});
  if (!c.tied_output) add("output.weight", {E, V});
  return plan;
}

std::vector<PlannedTensor> plan_model_tensors(const ModelShape& shape, const FileType& ft) {
  return plan_model(shape, ft).tensors;
}

}  // namespace pipellm

#include "engine/model_gen/shape_metadata.h"

#include <algorithm>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/family_metadata.h"

namespace pipellm {

namespace {

// The tensors whose presence a recipe reads (it cannot see them in metadata): a separate
// output head, rope_freqs, and gemma4's per-layer attn_v / layer_output_scale. The last layer's
// attn_norm, which every layer has, makes the blk.N tensors agree with block_count (checked
// whenever a file has tensors).
std::vector<std::string> presence_tensors(const ModelShape& s) {
  std::vector<std::string> names;
  if (s.n_layer > 0) names.push_back("blk." + std::to_string(s.n_layer - 1) + ".attn_norm.weight");
  if (!s.tied_output) names.push_back("output.weight");
  if (s.rope_freqs) names.push_back("rope_freqs.weight");
  if (s.arch == "gemma4") {
    for (std::string& n : gemma4_presence_tensors(s)) names.push_back(std::move(n));
  }
  return names;
}

}  // namespace

void write_shape_hparams(GgufWriter& w, const ModelShape& s) {
  const auto& archs = model_shape_archs();
  if (std::find(archs.begin(), archs.end(), s.arch) == archs.end())
    throw InvalidArgument("architecture '" + s.arch + "' cannot be generated");
  if (s.arch == "gemma4") return write_gemma4_hparams(w, s);
  const std::string a = s.arch + ".";
  auto u32 = [&](const char* k, int v) { w.set_u32(a + k, static_cast<uint32_t>(v)); };
  // The keys every family shares, in the order the first generator wrote them (files of the
  // dense presets stay byte-identical).
  u32("block_count", s.n_layer);
  u32("context_length", s.n_ctx);
  u32("embedding_length", s.n_embd);
  if (s.n_ff > 0) u32("feed_forward_length", s.n_ff);  // qwen35moe's converter writes none
  u32("attention.head_count", s.n_head);
  u32("attention.head_count_kv", s.n_head_kv);
  u32("attention.key_length", s.key_length());
  u32("attention.value_length", s.key_length());
  u32("rope.dimension_count", s.rope_dims());
  w.set_f32(a + "rope.freq_base", s.rope_base);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", s.rms_eps);
  u32("vocab_size", s.n_vocab);
  // What only some families have.
  if (s.n_expert > 0) {
    u32("expert_count", s.n_expert);
    u32("expert_used_count", s.n_expert_used);
  }
  if (s.n_ff_expert > 0) u32("expert_feed_forward_length", s.n_ff_expert);
  if (s.sliding_window > 0) u32("attention.sliding_window", s.sliding_window);
  if (s.rope_base_swa > 0.0f) w.set_f32(a + "rope.freq_base_swa", s.rope_base_swa);
  if (s.rope_scaling != "none") {
    w.set_string(a + "rope.scaling.type", s.rope_scaling);
    w.set_f32(a + "rope.scaling.factor", s.rope_scaling_factor);
    if (s.rope_scaling_orig_ctx > 0) u32("rope.scaling.original_context_length", s.rope_scaling_orig_ctx);
  }
  if (s.logit_softcap > 0.0f) w.set_f32(a + "final_logit_softcapping", s.logit_softcap);
  if (s.arch == "qwen35" || s.arch == "qwen35moe") write_qwen35_hparams(w, s);
}

ModelConfig config_for_shape(const ModelShape& s) {
  GgufWriter w;
  w.set_string("general.architecture", s.arch);
  write_shape_hparams(w, s);
  // One float for each tensor the recipe looks for by name: it tells the structure as it does
  // from a real file (the loader checks shapes later, against the real tensors).
  static const float kZero = 0.0f;
  for (const std::string& name : presence_tensors(s)) w.add_tensor(name, TensorType::F32, {1}, &kZero);
  const std::vector<uint8_t> bytes = w.write_to_memory();
  const auto f = GgufFile::parse(bytes.data(), bytes.size(), "shape of " + s.arch + " (" + shape_summary(s) + ")");
  return ModelConfig::from_gguf(*f);
}

}  // namespace pipellm

#include "engine/model_gen/family_metadata.h"

#include <algorithm>
#include <cstdint>

#include "base/error.h"
#include "engine/gguf/gguf_value.h"

namespace pipellm {
namespace {

std::vector<int32_t> to_i32(const std::vector<int>& v) { return std::vector<int32_t>(v.begin(), v.end()); }

// GgufWriter has no bool-array setter; a value with a raw view copies one.
void set_bool_array(GgufWriter& w, const std::string& key, const std::vector<bool>& flags) {
  std::vector<uint8_t> bytes(flags.begin(), flags.end());
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.elem_type = GgufType::BOOL;
  v.count = bytes.size();
  v.raw = bytes.data();
  w.set_value(key, v);
}

bool owns_kv(const ModelShape& s, int il) { return il < s.n_layer - s.shared_kv_layers; }

}  // namespace

void write_qwen35_hparams(GgufWriter& w, const ModelShape& s) {
  if (s.ssm_conv_kernel <= 0 || s.ssm_state <= 0 || s.ssm_groups <= 0 || s.ssm_v_heads <= 0 || s.rope_sections.size() != 4)
    throw InvalidArgument("a " + s.arch + " shape needs its DeltaNet geometry (ssm conv kernel, state size, key and "
                          "value heads) and 4 rope sections: start from a preset (qwen3.6-27b, qwen3.6-35b-a3b)");
  const std::string a = s.arch + ".";
  auto u32 = [&](const char* k, int v) { w.set_u32(a + k, static_cast<uint32_t>(v)); };
  w.set_i32_array(a + "rope.dimension_sections", to_i32(s.rope_sections));
  u32("ssm.conv_kernel", s.ssm_conv_kernel);
  u32("ssm.state_size", s.ssm_state);
  u32("ssm.group_count", s.ssm_groups);
  u32("ssm.time_step_rank", s.ssm_v_heads);
  u32("ssm.inner_size", s.ssm_v_heads * s.ssm_state);
  if (s.full_attention_interval > 0) u32("full_attention_interval", s.full_attention_interval);
  if (s.n_ff_shexp > 0) u32("expert_shared_feed_forward_length", s.n_ff_shexp);
}

void write_gemma4_hparams(GgufWriter& w, const ModelShape& s) {
  if (s.head_dim <= 0 || s.head_dim_swa <= 0 || s.sliding_window <= 0)
    throw InvalidArgument("a gemma4 shape needs the global and sliding head sizes and a sliding window: start from a "
                          "preset (gemma4-31b, gemma4-26b-a4b)");
  if (!s.swa_layers.empty() && static_cast<int>(s.swa_layers.size()) != s.n_layer)
    throw InvalidArgument("gemma4 shape: " + std::to_string(s.swa_layers.size()) + " sliding flags for " +
                          std::to_string(s.n_layer) + " layers");
  const std::string a = "gemma4.";
  auto u32 = [&](const char* k, int v) { w.set_u32(a + k, static_cast<uint32_t>(v)); };
  std::vector<int32_t> ff, kv_heads;
  std::vector<bool> sliding;
  for (int il = 0; il < s.n_layer; ++il) {
    ff.push_back(s.layer_ff(il));
    sliding.push_back(s.slides(il));
    kv_heads.push_back(sliding.back() || s.n_head_kv_global <= 0 ? s.n_head_kv : s.n_head_kv_global);
  }
  // The order of llama.cpp's converter.
  u32("vocab_size", s.n_vocab);
  u32("context_length", s.n_ctx);
  u32("embedding_length", s.n_embd);
  u32("block_count", s.n_layer);
  // One width for all layers is a scalar; the converter writes a list only where they differ.
  if (std::all_of(ff.begin(), ff.end(), [&](int32_t f) { return f == ff.front(); })) {
    u32("feed_forward_length", s.n_ff);
  } else {
    w.set_i32_array(a + "feed_forward_length", ff);
  }
  u32("attention.head_count", s.n_head);
  w.set_i32_array(a + "attention.head_count_kv", kv_heads);
  u32("attention.key_length", s.head_dim);
  u32("attention.value_length", s.head_dim);
  u32("attention.key_length_swa", s.head_dim_swa);
  u32("attention.value_length_swa", s.head_dim_swa);
  // Global layers rotate every dimension, rope_freqs.weight leaving all but a fraction still.
  u32("rope.dimension_count", s.head_dim);
  u32("rope.dimension_count_swa", s.head_dim_swa);
  w.set_f32(a + "rope.freq_base", s.rope_base);
  w.set_f32(a + "rope.freq_base_swa", s.rope_base_swa > 0.0f ? s.rope_base_swa : 10000.0f);
  u32("attention.sliding_window", s.sliding_window);
  set_bool_array(w, a + "attention.sliding_window_pattern", sliding);
  u32("attention.shared_kv_layers", s.shared_kv_layers);
  u32("embedding_length_per_layer_input", s.per_layer_input);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", s.rms_eps);
  if (s.logit_softcap > 0.0f) w.set_f32(a + "final_logit_softcapping", s.logit_softcap);
  if (s.n_expert > 0) {
    u32("expert_count", s.n_expert);
    u32("expert_used_count", s.n_expert_used);
    u32("expert_feed_forward_length", s.n_ff_expert);
  }
}

std::vector<std::string> gemma4_presence_tensors(const ModelShape& s) {
  std::vector<std::string> names;
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    if (owns_kv(s, il) && (s.slides(il) || !s.k_eq_v)) names.push_back(p + "attn_v.weight");
    if (s.layer_output_scale) names.push_back(p + "layer_output_scale.weight");
  }
  return names;
}

}  // namespace pipellm

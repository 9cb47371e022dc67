// The published shapes mkmodel knows by name (model_preset): hyperparameters as each model's
// Hugging Face config.json gives them, written the way llama.cpp's converter writes them.
#include <utility>

#include "engine/model_gen/model_shape.h"

namespace pipellm {
namespace {

ModelShape make(const char* arch, int n_layer, int n_embd, int n_ff, int n_head, int n_head_kv, int n_vocab,
                int n_ctx, float rope_base, float rms_eps, bool tied, int head_dim = 0) {
  ModelShape s;
  s.arch = arch;
  s.n_layer = n_layer;
  s.n_embd = n_embd;
  s.n_ff = n_ff;
  s.n_head = n_head;
  s.n_head_kv = n_head_kv;
  s.n_vocab = n_vocab;
  s.n_ctx = n_ctx;
  s.rope_base = rope_base;
  s.rms_eps = rms_eps;
  s.tied_output = tied;
  s.head_dim = head_dim;
  return s;
}

ModelShape with_experts(ModelShape s, int n_expert, int n_used, int n_ff_expert = 0) {
  s.n_expert = n_expert;
  s.n_expert_used = n_used;
  s.n_ff_expert = n_ff_expert;
  return s;
}

// Gemma 3 (HF text_config): 5 sliding layers of window 1024 (rope_local_base_freq 10000) per
// global one (rope_theta 1e6, linear scaling x8); tied; the GGUF vocabulary is the tokenizer's
// 262144 pieces (config.json's 262208 is the padded embedding, which the converter trims).
ModelShape gemma3(int n_layer, int n_embd, int n_ff, int n_head, int n_head_kv, int head_dim) {
  ModelShape s = make("gemma3", n_layer, n_embd, n_ff, n_head, n_head_kv, 262144, 131072, 1000000.0f, 1e-6f, true,
                      head_dim);
  s.sliding_window = 1024;
  s.rope_base_swa = 10000.0f;
  s.rope_scaling = "linear";
  s.rope_scaling_factor = 8.0f;
  return s;
}

// gpt-oss-20b (config.json): 24 layers alternating sliding (128) and full attention, 64 query
// heads of 64, 8 KV heads, 32 experts (top 4) of width 2880, YaRN x32 from 4096, o200k_harmony's
// 201088 tokens. Published as MXFP4 experts with everything else Q8_0 (ggml-org's GGUF).
ModelShape gpt_oss_20b() {
  ModelShape s = with_experts(make("gpt-oss", 24, 2880, 2880, 64, 8, 201088, 131072, 150000.0f, 1e-5f, false, 64),
                              32, 4, 2880);
  s.sliding_window = 128;
  s.rope_scaling = "yarn";
  s.rope_scaling_factor = 32.0f;
  s.rope_scaling_orig_ctx = 4096;
  s.file_type = "MXFP4_MOE";
  return s;
}

// Phi-3-mini-4k-instruct (config.json): 32 layers, 32 heads (no GQA), vocab 32064, untied; its
// sliding_window 2047 is written by the converter and ignored by llama.cpp.
ModelShape phi3_mini() {
  ModelShape s = make("phi3", 32, 3072, 8192, 32, 32, 32064, 4096, 10000.0f, 1e-5f, false);
  s.sliding_window = 2047;
  return s;
}

// Qwen3.6 (Qwen/Qwen3.6-27B and Qwen/Qwen3.6-35B-A3B, config.json text_config; the same
// architecture as Qwen3.5): a gated attention layer every 4th (full_attention_interval 4), the
// others Gated DeltaNet with 16 key heads (linear_num_key_heads) of 128 (linear_key_head_dim),
// conv kernel 4; attention heads of 256 (head_dim) rotated over a quarter (partial_rotary_factor
// 0.25: 64 dims) with mrope_section [11, 11, 10] (the converter appends a 0), rope_theta 1e7,
// rms_norm_eps 1e-6, max_position_embeddings 262144, vocab_size 248320, untied. The MTP block
// (mtp_num_hidden_layers 1) is not converted.
ModelShape qwen36(ModelShape s, int ssm_v_heads) {
  s.n_rot = 64;
  s.rope_sections = {11, 11, 10, 0};
  s.full_attention_interval = 4;
  s.ssm_conv_kernel = 4;
  s.ssm_state = 128;
  s.ssm_groups = 16;
  s.ssm_v_heads = ssm_v_heads;  // linear_num_value_heads
  return s;
}

// Qwen3.6-27B: 64 layers, hidden_size 5120, intermediate_size 17408, 24 heads / 4 KV heads,
// 48 DeltaNet value heads.
ModelShape qwen36_27b() {
  return qwen36(make("qwen35", 64, 5120, 17408, 24, 4, 248320, 262144, 10000000.0f, 1e-6f, false, 256), 48);
}

// Qwen3.6-35B-A3B: 40 layers, hidden_size 2048, 16 heads / 2 KV heads, 32 DeltaNet value heads;
// 256 experts (top 8) of moe_intermediate_size 512 and a shared expert of 512 in every layer. The
// converter writes no feed_forward_length for it (n_ff 0).
ModelShape qwen36_35b_a3b() {
  ModelShape s = qwen36(
      with_experts(make("qwen35moe", 40, 2048, 0, 16, 2, 248320, 262144, 10000000.0f, 1e-6f, false, 256), 256, 8,
                   512),
      32);
  s.n_ff_shexp = 512;
  return s;
}

// Gemma 4 (google/gemma-4-31B and gemma-4-26B-A4B, config.json text_config): 5 sliding layers
// (sliding_window 1024, head_dim 256, rope_theta 1e4) per full-attention one (global_head_dim
// 512, num_global_key_value_heads, rope_theta 1e6 with partial_rotary_factor 0.25 as
// "proportional" rope: the converter writes rope_freqs.weight and rope.dimension_count 512);
// attention_k_eq_v (no attn_v on the global layers), a layer scalar per layer, no KV sharing
// (num_kv_shared_layers 0) and no per-layer inputs (hidden_size_per_layer_input 0); GELU;
// final_logit_softcapping 30, rms_norm_eps 1e-6, max_position_embeddings 262144, vocab_size
// 262144, tied.
ModelShape gemma4(ModelShape s, int n_head_kv_global) {
  s.head_dim_swa = 256;
  s.n_head_kv_global = n_head_kv_global;
  s.swa_period = 6;
  s.sliding_window = 1024;
  s.rope_base_swa = 10000.0f;
  s.logit_softcap = 30.0f;
  s.k_eq_v = true;
  s.layer_output_scale = true;
  s.rope_freqs = true;
  return s;
}

// gemma-4-31B: 60 layers, hidden_size 5376, intermediate_size 21504, 32 heads, 16 KV heads on
// sliding layers and 4 on global ones.
ModelShape gemma4_31b() {
  return gemma4(make("gemma4", 60, 5376, 21504, 32, 16, 262144, 262144, 1000000.0f, 1e-6f, true, 512), 4);
}

// gemma-4-26B-A4B: 30 layers, hidden_size 2816, 16 heads, 8 / 2 KV heads; every layer has a
// dense GELU MLP of intermediate_size 2112 beside 128 experts (top_k_experts 8) of
// moe_intermediate_size 704.
ModelShape gemma4_26b_a4b() {
  return gemma4(
      with_experts(make("gemma4", 30, 2816, 2112, 16, 8, 262144, 262144, 1000000.0f, 1e-6f, true, 512), 128, 8, 704),
      2);
}

// Hyperparameters as published in the models' configurations (HF config.json).
std::vector<std::pair<std::string, ModelShape>> presets() {
  return {
      {"llama3-8b", make("llama", 32, 4096, 14336, 32, 8, 128256, 8192, 500000.0f, 1e-5f, false)},
      {"llama3.2-1b", make("llama", 16, 2048, 8192, 32, 8, 128256, 8192, 500000.0f, 1e-5f, true)},
      {"llama2-7b", make("llama", 32, 4096, 11008, 32, 32, 32000, 4096, 10000.0f, 1e-5f, false)},
      {"qwen2.5-7b", make("qwen2", 28, 3584, 18944, 28, 4, 152064, 32768, 1000000.0f, 1e-6f, false)},
      {"qwen2.5-32b", make("qwen2", 64, 5120, 27648, 40, 8, 152064, 32768, 1000000.0f, 1e-6f, false)},
      {"qwen3-8b", make("qwen3", 36, 4096, 12288, 32, 8, 151936, 40960, 1000000.0f, 1e-6f, false, 128)},
      {"gemma3-12b", gemma3(48, 3840, 15360, 16, 8, 256)},
      {"gemma3-27b", gemma3(62, 5376, 21504, 32, 16, 128)},
      {"phi3-mini", phi3_mini()},
      // Qwen3-30B-A3B: 128 experts of width 768 (moe_intermediate_size), top 8; the converter also
      // writes the unused dense intermediate_size 6144 as feed_forward_length.
      {"qwen3-30b-a3b",
       with_experts(make("qwen3moe", 48, 2048, 6144, 32, 4, 151936, 40960, 1000000.0f, 1e-6f, false, 128), 128, 8,
                    768)},
      // Mixtral-8x7B-v0.1: Mistral 7B's attention, 8 experts of width 14336 (top 2), as llama.
      {"mixtral-8x7b",
       with_experts(make("llama", 32, 4096, 14336, 32, 8, 32000, 32768, 1000000.0f, 1e-5f, false), 8, 2)},
      {"gpt-oss-20b", gpt_oss_20b()},
      {"qwen3.6-35b-a3b", qwen36_35b_a3b()},
      {"qwen3.6-27b", qwen36_27b()},
      {"gemma4-31b", gemma4_31b()},
      {"gemma4-26b-a4b", gemma4_26b_a4b()},
      {"tiny", make("llama", 2, 256, 768, 4, 2, 1024, 2048, 10000.0f, 1e-5f, false)},
  };
}

}  // namespace

std::optional<ModelShape> model_preset(const std::string& name) {
  for (auto& [n, s] : presets())
    if (n == name) return s;
  return std::nullopt;
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> out;
  for (auto& p : presets()) out.push_back(p.first);
  return out;
}

}  // namespace pipellm

#include "engine/model_gen/model_shape.h"

#include <algorithm>
#include <sstream>
#include <utility>

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
      {"tiny", make("llama", 2, 256, 768, 4, 2, 1024, 2048, 10000.0f, 1e-5f, false)},
  };
}

}  // namespace

const std::vector<std::string>& model_shape_archs() {
  static const std::vector<std::string> kArchs = {"llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "phi3", "gpt-oss"};
  return kArchs;
}

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

ModelShape shrink_shape(const ModelShape& s) {
  ModelShape t = s;
  // gemma3 slides on 5 layers of 6 (the recipe's default pattern): 6 layers hold a global one.
  t.n_layer = std::min(s.n_layer, s.arch == "gemma3" ? 6 : 2);
  t.n_embd = 256;
  const int group = s.n_head_kv > 0 ? std::max(1, s.n_head / s.n_head_kv) : 1;
  t.n_head_kv = 2;
  t.n_head = 2 * std::min(group, 4);
  if (s.head_dim > 0) t.head_dim = 64;  // families that name the head size apart keep naming it
  if (s.n_expert > 0) {
    t.n_expert = std::min(s.n_expert, 16);
    t.n_expert_used = std::min(s.n_expert_used, t.n_expert / 2);
    if (s.n_ff_expert > 0) t.n_ff_expert = 256;
  }
  t.n_ff = s.n_expert > 0 && s.n_ff_expert == 0 ? 256 : 512;  // Mixtral's experts are n_ff wide
  if (s.sliding_window > 0) t.sliding_window = std::min(s.sliding_window, 16);
  t.n_vocab = 1024;
  return t;
}

std::string shape_summary(const ModelShape& s) {
  std::ostringstream os;
  os << s.arch << ", " << s.n_layer << " layers, n_embd " << s.n_embd << ", heads " << s.n_head << "/" << s.n_head_kv;
  if (s.n_expert > 0) os << ", " << s.n_expert << " experts (" << s.n_expert_used << " used)";
  if (s.sliding_window > 0 && s.arch != "phi3") os << ", window " << s.sliding_window;
  if (s.tied_output) os << ", tied";
  os << ", vocab " << s.n_vocab << ", " << s.file_type;
  return os.str();
}

}  // namespace pipellm

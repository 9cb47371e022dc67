// Shapes of real model families, for writing random-weight models of a real size.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm {

struct ModelShape {
  std::string arch = "llama";  // llama | qwen2 | qwen3
  int n_layer = 0;
  int n_embd = 0;
  int n_ff = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // 0: n_embd / n_head
  int n_vocab = 0;
  int n_ctx = 4096;
  float rope_base = 10000.0f;
  float rms_eps = 1e-5f;
  bool tied_output = false;

  int key_length() const { return head_dim > 0 ? head_dim : n_embd / n_head; }
  bool has_qkv_bias() const { return arch == "qwen2"; }
  bool has_qk_norm() const { return arch == "qwen3"; }
};

// llama3-8b, llama3.2-1b, llama2-7b, qwen2.5-7b, qwen2.5-32b, qwen3-8b, tiny.
std::optional<ModelShape> model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

}  // namespace pipellm

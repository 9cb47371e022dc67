#include "engine/model_gen/model_shape.h"

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

// Hyperparameters as published in the models' configurations.
std::vector<std::pair<std::string, ModelShape>> presets() {
  return {
      {"llama3-8b", make("llama", 32, 4096, 14336, 32, 8, 128256, 8192, 500000.0f, 1e-5f, false)},
      {"llama3.2-1b", make("llama", 16, 2048, 8192, 32, 8, 128256, 8192, 500000.0f, 1e-5f, true)},
      {"llama2-7b", make("llama", 32, 4096, 11008, 32, 32, 32000, 4096, 10000.0f, 1e-5f, false)},
      {"qwen2.5-7b", make("qwen2", 28, 3584, 18944, 28, 4, 152064, 32768, 1000000.0f, 1e-6f, false)},
      {"qwen2.5-32b", make("qwen2", 64, 5120, 27648, 40, 8, 152064, 32768, 1000000.0f, 1e-6f, false)},
      {"qwen3-8b", make("qwen3", 36, 4096, 12288, 32, 8, 151936, 40960, 1000000.0f, 1e-6f, false, 128)},
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

// llama, qwen2, qwen3 (dense) and their mixture-of-experts forms: llama with Mixtral-style
// stacked experts, qwen3moe. One block for all: pre-norm attention (q/k/v biases for qwen2,
// per-head q/k norms for qwen3), pre-norm SwiGLU FFN or softmax-top-k routed experts.
#include <cmath>

#include "engine/model/arch/recipe.h"

namespace pipellm::arch {

void llama_layers(ModelConfig& c, const LayerSpec& base) {
  LayerSpec s = base;
  s.qkv_bias = c.has_qkv_bias;
  s.qk_norm = c.has_qk_norm;
  s.rope.freq_factors = c.has_rope_freqs;
  if (s.attn_scale == 0.0f) s.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  c.layers.assign(static_cast<size_t>(c.n_layer), s);
  c.n_ff = s.n_ff;
}

void llama_family(const GgufFile& f, ModelConfig& c) {
  const HParams h(f, arch_name(c.arch));
  read_common(h, c, c.arch == Arch::Llama ? 1e-5f : 1e-6f);
  LayerSpec s;
  s.rope = read_rope(h, c.arch == Arch::Llama ? RopeType::Normal : RopeType::Neox);
  c.has_qkv_bias = c.arch == Arch::Qwen2 || f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.has_qk_norm = c.arch == Arch::Qwen3 || c.arch == Arch::Qwen3Moe ||
                  f.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
  if (c.arch == Arch::Qwen3Moe || h.opt_nonneg("expert_count", 0) > 0) {
    s.ffn = FfnKind::Moe;
    read_experts(h, s);
    // Mixtral's experts are feed_forward_length wide; qwen3moe names their width apart.
    s.n_ff = c.arch == Arch::Qwen3Moe ? h.req("expert_feed_forward_length") : h.req("feed_forward_length");
  } else {
    s.n_ff = h.req("feed_forward_length");
  }
  llama_layers(c, s);
}

}  // namespace pipellm::arch

// qwen35 / qwen35moe (Qwen3.5 / 3.6): Gated DeltaNet layers with a gated full-attention layer
// every `full_attention_interval` (layer il is DeltaNet iff (il + 1) % interval != 0, or as the
// attention.recurrent_layers array says). Attention: attn_q holds [q | gate] per head, q/k
// RMSNorm, rope over the first n_rot dims (IMROPE: a text token has the same position in every
// section, so it is NEOX on n_rot dims), output *= sigmoid(gate). The pre-FFN norm is stored as
// post_attention_norm. FFN: SwiGLU, or (qwen35moe) softmax-top-k experts plus a shared expert
// gated by sigmoid(ffn_gate_inp_shexp . h).
#include <cmath>

#include "engine/model/arch/recipe.h"

namespace pipellm::arch {

void qwen35(const GgufFile& f, ModelConfig& c) {
  const bool moe = c.arch == Arch::Qwen35Moe;
  const HParams h(f, arch_name(c.arch));
  read_common(h, c, 1e-6f);
  if (!h.has("rope.dimension_sections")) h.fail("rope.dimension_sections", "missing key");
  DeltaNetShape d;
  d.conv_kernel = h.req("ssm.conv_kernel");
  d.head = h.req("ssm.state_size");
  d.n_k_heads = h.req("ssm.group_count");
  d.n_v_heads = h.req("ssm.time_step_rank");
  if (d.n_v_heads % d.n_k_heads != 0) {
    h.fail("ssm.time_step_rank", std::to_string(d.n_v_heads) + " value heads are not a multiple of the " +
                                     std::to_string(d.n_k_heads) + " key heads");
  }
  if (h.has("ssm.inner_size") && h.req("ssm.inner_size") != d.n_v_heads * d.head) {
    h.fail("ssm.inner_size", "is not time_step_rank * state_size");
  }
  std::vector<int32_t> recurrent;
  if (h.has("attention.recurrent_layers")) {
    recurrent = f.get_i32_array(h.key("attention.recurrent_layers"));
    if (static_cast<int>(recurrent.size()) != c.n_layer) h.fail("attention.recurrent_layers", "needs one entry per layer");
  }
  const int interval = h.opt("full_attention_interval", 4);

  LayerSpec s;
  s.rope = read_rope(h, RopeType::Neox);
  s.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  s.qk_norm = true;
  s.gated_q = true;
  s.ffn_norm_name = "post_attention_norm";
  if (moe) {
    s.ffn = FfnKind::Moe;
    read_experts(h, s);
    s.n_ff = h.req("expert_feed_forward_length");
    s.n_ff_shexp = h.opt_nonneg("expert_shared_feed_forward_length", 0);
  } else {
    s.n_ff = h.req("feed_forward_length");
  }
  for (int il = 0; il < c.n_layer; ++il) {
    const bool delta = recurrent.empty() ? (il + 1) % interval != 0 : recurrent[static_cast<size_t>(il)] != 0;
    LayerSpec l = s;
    if (delta) {
      l.mixer = Mixer::DeltaNet;
      l.delta = d;
    }
    c.layers.push_back(l);
  }
  c.has_qk_norm = true;
}

}  // namespace pipellm::arch

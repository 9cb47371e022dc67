// gpt-oss: attention with q/k/v/o biases and per-head sinks, YaRN rope on every layer, even
// layers sliding (window from the file), odd ones global; the pre-FFN norm is stored as
// post_attention_norm; experts routed by softmax over the top-k router logits (router and
// expert biases), with the clamped SwiGLU (kernels/cpu/gated_activation.h). Never tied.
#include <cmath>

#include "engine/model/arch/recipe.h"

namespace pipellm::arch {

void gpt_oss(const GgufFile& f, ModelConfig& c) {
  const HParams h(f, "gpt-oss");
  read_common(h, c, 1e-5f);
  const int window = h.req("attention.sliding_window");
  LayerSpec s;
  s.rope = read_rope(h, RopeType::Neox);
  s.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  s.qkv_bias = true;
  s.o_bias = true;
  s.sinks = true;
  s.ffn_norm_name = "post_attention_norm";
  s.ffn = FfnKind::Moe;
  read_experts(h, s);
  s.n_ff = h.req("expert_feed_forward_length");
  s.act = GatedAct::SwigluOai;
  s.routing = MoeRouting::TopKSoftmax;
  s.router_bias = true;
  s.expert_bias = true;
  for (int il = 0; il < c.n_layer; ++il) {
    s.window = il % 2 == 0 ? window : 0;
    c.layers.push_back(s);
  }
  c.n_ff = s.n_ff;
}

}  // namespace pipellm::arch

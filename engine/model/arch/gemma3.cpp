// gemma3: embeddings scaled by sqrt(n_embd); sliding-window layers (window and pattern from the
// file: layer il slides iff il % P < P - 1) with their own unscaled rope base, global layers
// with rope.freq_base and its scaling; per-head q/k norms; norms before and after both the
// attention and the GELU(tanh)-gated FFN; optional final logit softcap. Norm weights already
// hold Gemma's +1.
#include <cmath>

#include "engine/model/arch/recipe.h"

namespace pipellm::arch {

void gemma3(const GgufFile& f, ModelConfig& c) {
  const HParams h(f, "gemma3");
  read_common(h, c, 1e-6f);
  c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
  c.logit_softcap = h.f32("final_logit_softcapping", 0.0f);
  const int window = h.opt_nonneg("attention.sliding_window", 0);
  const int pattern = h.opt("attention.sliding_window_pattern", 6);

  LayerSpec s;
  s.qk_norm = true;
  s.post_attn_norm = true;
  s.post_ffn_norm = true;
  s.act = GatedAct::GeluTanh;
  s.n_ff = h.req("feed_forward_length");
  // llama.cpp scales Gemma 3 27B's queries by n_embd / n_head (its query_pre_attn_scalar),
  // recognising the model by its 62 layers; the others by the head size.
  s.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.n_layer == 62 ? c.n_embd / c.n_head : c.head_dim));
  const RopeSpec global = read_rope(h, RopeType::Neox);
  RopeSpec local;
  local.type = RopeType::Neox;
  local.base = h.f32("rope.freq_base_swa", 10000.0f);
  for (int il = 0; il < c.n_layer; ++il) {
    const bool sliding = window > 0 && il % pattern < pattern - 1;
    s.window = sliding ? window : 0;
    s.rope = sliding ? local : global;
    c.layers.push_back(s);
  }
  c.n_ff = s.n_ff;
}

}  // namespace pipellm::arch

// phi3: one attn_qkv matrix (rows q, k, v) and one ffn_up holding [gate; up]; NEOX rope.
// `sliding_window` in Phi-3 files is ignored, as llama.cpp does.
#include <cmath>

#include "base/error.h"
#include "engine/model/arch/recipe.h"

namespace pipellm::arch {

void phi3(const GgufFile& f, ModelConfig& c) {
  const HParams h(f, "phi3");
  read_common(h, c, 1e-5f);
  if (f.find_tensor("rope_factors_long.weight") != nullptr || f.find_tensor("rope_factors_short.weight") != nullptr) {
    throw FormatError(f.name() + ": LongRoPE (rope_factors_long/short, the 128k Phi-3 variants) is not supported yet");
  }
  LayerSpec s;
  s.rope = read_rope(h, RopeType::Neox);
  s.qkv_fused = true;
  s.gate_up_fused = true;
  s.n_ff = h.req("feed_forward_length");
  s.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  c.layers.assign(static_cast<size_t>(c.n_layer), s);
  c.n_ff = s.n_ff;
}

}  // namespace pipellm::arch

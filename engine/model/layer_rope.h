// A layer's RoPE settings for the kernels (kernels/cpu/rope.h RopeParams; the CUDA rope takes
// the same fields): one translation of LayerSpec::rope for the CPU and CUDA passes.
#pragma once
#include "engine/model/model_config.h"
#include "kernels/cpu/rope.h"

namespace pipellm {

// freq_factors: the model's rope_freqs (as floats, host or device), used when the layer asks.
inline RopeParams layer_rope(const LayerSpec& s, const float* freq_factors) {
  RopeParams p;
  p.n_rot = s.n_rot;
  p.base = s.rope.base;
  p.freq_scale = s.rope.freq_scale;
  p.freq_factors = s.rope.freq_factors ? freq_factors : nullptr;
  p.mode = s.rope.type == RopeType::Neox ? RopeMode::Neox : RopeMode::Normal;
  p.ext_factor = s.rope.ext_factor;
  p.attn_factor = s.rope.attn_factor;
  if (s.rope.ext_factor != 0.0f) {
    rope_yarn_corr_dims(s.n_rot, s.rope.n_ctx_orig, s.rope.base, s.rope.beta_fast, s.rope.beta_slow, p.corr_dims);
  }
  return p;
}

}  // namespace pipellm

// Rotary position embedding (CPU reference), applied in place to the heads of one token.
//
// For dimension pair i (0 <= i < n_rot/2) the angle is
//   theta_i = pos * freq_scale * base^(-2i / n_rot) / freq_factors[i]   (factors optional)
// and the pair is rotated by theta_i:  (a, b) -> (a cos - b sin, a sin + b cos).
// Normal mode (llama): the pair is (x[2i], x[2i+1]). Neox mode (qwen2/3): (x[i], x[i + n_rot/2]).
// Dimensions n_rot..head_dim-1 are left unchanged.
//
// YaRN (ext_factor != 0, gpt-oss): with theta_e = pos * base^(-2i/n_rot) / freq_factors[i] the
// extrapolated and theta_i = freq_scale * theta_e the interpolated angle, pair i takes
//   theta = theta_i (1 - m) + theta_e m,  m = ext_factor * (1 - clamp((i - c0) / max(0.001, c1 - c0), 0, 1))
// with the correction range [c0, c1] of rope_yarn_corr_dims, and cos/sin are multiplied by
// attn_factor * (1 + 0.1 ln(1 / freq_scale)). Without YaRN they are multiplied by attn_factor.
#pragma once
#include <cstdint>
#include <vector>

namespace pipellm {

enum class RopeMode { Normal, Neox };

struct RopeParams {
  int n_rot = 0;
  float base = 10000.0f;
  float freq_scale = 1.0f;
  const float* freq_factors = nullptr;  // n_rot/2 divisors (Llama 3.1 rope_freqs), or null
  RopeMode mode = RopeMode::Normal;
  float ext_factor = 0.0f;   // YaRN mix, 0 = off
  float attn_factor = 1.0f;  // magnitude scale of cos/sin
  float corr_dims[2] = {0.0f, 0.0f};
};

// YaRN's correction range for a context the model was trained on (n_ctx_orig) and the
// rotations beta_fast / beta_slow: dims below c0 extrapolate, above c1 interpolate.
void rope_yarn_corr_dims(int n_rot, int n_ctx_orig, float base, float beta_fast, float beta_slow, float dims[2]);

// cos/sin of every pair's angle at a position: cs[2i] = cos(theta_i), cs[2i+1] = sin(theta_i).
// Angles are computed in double, so large positions keep their precision.
void rope_angles(const RopeParams& p, int64_t pos, float* cs);

// Rotates n_heads heads of head_dim floats each (head h at x + h*head_dim) with angles `cs`.
void rope_apply(const RopeParams& p, const float* cs, float* x, int n_heads, int head_dim);

// rope_angles + rope_apply.
void rope(const RopeParams& p, int64_t pos, float* x, int n_heads, int head_dim);

}  // namespace pipellm

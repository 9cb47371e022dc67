// Rotary position embedding (CPU reference), applied in place to the heads of one token.
//
// For dimension pair i (0 <= i < n_rot/2) the angle is
//   theta_i = pos * freq_scale * base^(-2i / n_rot) / freq_factors[i]   (factors optional)
// and the pair is rotated by theta_i:  (a, b) -> (a cos - b sin, a sin + b cos).
// Normal mode (llama): the pair is (x[2i], x[2i+1]). Neox mode (qwen2/3): (x[i], x[i + n_rot/2]).
// Dimensions n_rot..head_dim-1 are left unchanged.
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
};

// cos/sin of every pair's angle at a position: cs[2i] = cos(theta_i), cs[2i+1] = sin(theta_i).
// Angles are computed in double, so large positions keep their precision.
void rope_angles(const RopeParams& p, int64_t pos, float* cs);

// Rotates n_heads heads of head_dim floats each (head h at x + h*head_dim) with angles `cs`.
void rope_apply(const RopeParams& p, const float* cs, float* x, int n_heads, int head_dim);

// rope_angles + rope_apply.
void rope(const RopeParams& p, int64_t pos, float* x, int n_heads, int head_dim);

}  // namespace pipellm

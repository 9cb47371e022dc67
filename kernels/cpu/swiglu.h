// SwiGLU gate (CPU reference): out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x)).
// out may alias gate or up.
#pragma once
#include <cstdint>

namespace pipellm {

void swiglu(const float* gate, const float* up, int64_t n, float* out);

}  // namespace pipellm

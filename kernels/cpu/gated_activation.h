// The gated activations of feed-forward blocks (CPU reference): out[i] = act(gate[i], up[i]).
//   Silu      silu(g) * u                                   (llama, qwen, phi3, MoE experts)
//   GeluTanh  gelu_tanh(g) * u, gelu_tanh(g) = g/2 (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))   (gemma)
//   SwigluOai g' sigmoid(1.702 g') (clamp(u, -7, 7) + 1), g' = min(g, 7)                      (gpt-oss)
// out may alias gate or up.
#pragma once
#include <cstdint>

namespace pipellm {

enum class GatedAct { Silu, GeluTanh, SwigluOai };

const char* gated_act_name(GatedAct a);

// gpt-oss's constants (llama.cpp: swiglu_oai with alpha 1.702, limit 7).
constexpr float kOaiAlpha = 1.702f;
constexpr float kOaiLimit = 7.0f;

void gated_activation(GatedAct act, const float* gate, const float* up, int64_t n, float* out);

}  // namespace pipellm

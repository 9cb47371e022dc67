#include "kernels/cpu/gated_activation.h"

#include <algorithm>
#include <cmath>

#include <string>

#include "base/error.h"
#include "kernels/cpu/swiglu.h"

namespace pipellm {

const char* gated_act_name(GatedAct a) {
  switch (a) {
    case GatedAct::Silu: return "silu";
    case GatedAct::GeluTanh: return "gelu_tanh";
    case GatedAct::SwigluOai: return "swiglu_oai";
  }
  return "?";
}

void gated_activation(GatedAct act, const float* gate, const float* up, int64_t n, float* out) {
  switch (act) {
    case GatedAct::Silu:
      swiglu(gate, up, n, out);
      return;
    case GatedAct::GeluTanh: {
      const float k = std::sqrt(2.0f / static_cast<float>(M_PI));
      for (int64_t i = 0; i < n; ++i) {
        const float g = gate[i];
        out[i] = 0.5f * g * (1.0f + std::tanh(k * (g + 0.044715f * g * g * g))) * up[i];
      }
      return;
    }
    case GatedAct::SwigluOai:
      for (int64_t i = 0; i < n; ++i) {
        const float g = std::min(gate[i], kOaiLimit);
        const float u = std::min(std::max(up[i], -kOaiLimit), kOaiLimit);
        out[i] = g / (1.0f + std::exp(-kOaiAlpha * g)) * (u + 1.0f);
      }
      return;
  }
  throw Error("gated_activation: unknown activation " + std::to_string(static_cast<int>(act)));
}

}  // namespace pipellm

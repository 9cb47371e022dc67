// The gated activations on the device (reference: kernels/cpu/gated_activation.h), one source for
// every kernel that applies them (layer_ops.cu's elementwise ops, moe.cu's fused expert products),
// so that fused and separate launches agree bit for bit.
#pragma once
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "base/error.h"
#include "kernels/cpu/gated_activation.h"

namespace pipellm::cuda {

// tanh in double: under --use_fast_math tanhf becomes tanh.approx.f32 (relative error ~2^-11),
// too coarse for logits and for matching the CPU reference; these ops are memory-bound anyway.
__device__ __forceinline__ float tanh_exact(float x) { return static_cast<float>(tanh(static_cast<double>(x))); }

template <GatedAct A>
__device__ __forceinline__ float gated(float g, float u) {
  if constexpr (A == GatedAct::Silu) {
    return g / (1.0f + __expf(-g)) * u;
  } else if constexpr (A == GatedAct::GeluTanh) {
    constexpr float k = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * g * (1.0f + tanh_exact(k * (g + 0.044715f * g * g * g))) * u;
  } else {
    const float gc = fminf(g, kOaiLimit);
    const float uc = fminf(fmaxf(u, -kOaiLimit), kOaiLimit);
    return gc / (1.0f + __expf(-kOaiAlpha * gc)) * (uc + 1.0f);
  }
}

// gated<A> for a run-time activation (the mat-vec kernels' epilogue: one branch per output).
__device__ __forceinline__ float gated_by(GatedAct act, float g, float u) {
  switch (act) {
    case GatedAct::GeluTanh: return gated<GatedAct::GeluTanh>(g, u);
    case GatedAct::SwigluOai: return gated<GatedAct::SwigluOai>(g, u);
    default: return gated<GatedAct::Silu>(g, u);  // hosts check the activation (with_gated_act)
  }
}

// Calls fn(std::integral_constant<GatedAct, A>) for act: one switch for every launcher of
// gated<A>; an activation without a case fails loudly, naming `what`.
template <class Fn>
void with_gated_act(GatedAct act, const char* what, Fn&& fn) {
  switch (act) {
    case GatedAct::Silu: fn(std::integral_constant<GatedAct, GatedAct::Silu>{}); break;
    case GatedAct::GeluTanh: fn(std::integral_constant<GatedAct, GatedAct::GeluTanh>{}); break;
    case GatedAct::SwigluOai: fn(std::integral_constant<GatedAct, GatedAct::SwigluOai>{}); break;
    default: throw Error(std::string(what) + ": unknown activation " + std::to_string(static_cast<int>(act)));
  }
}

}  // namespace pipellm::cuda

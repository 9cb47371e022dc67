// Mixture-of-experts on the GPU, device-driven so that a decode step stays one CUDA graph:
// the chosen experts never leave the device.
//
// moe_route: per token t, from logits[t][n_expert] (+ bias) the k experts and weights exactly as
//   kernels/cpu/moe_route.h (same routing kinds, ties to the lower id, descending order).
// moe_matvec: "pair" p = t*k + j is token t's j-th expert e = ids[p]; y[p] = W_e x[p / x_group]
//   (+ bias_e), W_e the e-th expert matrix of a stack (DeviceMatrix of expert 0 whose n_out is
//   one expert's rows; expert e's bytes start at data + e * expert_bytes). x_group = k for the
//   gate/up products (a token's row serves its k experts), 1 for the down product.
//   Activations are float; weights decoded from the device layout (weight_layout.h). With the
//   8-bit activation blocks (xq/xds of the same rows, act_q8.h) and a type the dense mat-vec
//   multiplies on them (matvec_uses_q8: every quantized type), rows of whole items and
//   experts 16-byte aligned, the products use its dp4a formats instead: the chosen experts' rows
//   read once per pair, as for a dense matrix. Otherwise the float kernel (same results up to
//   the activations' 8-bit rounding).
// moe_gated_act: g[p] = act(g[p] + bias_g[e], u[p] + bias_u[e]) for each pair (biases optional),
//   kernels/cpu/gated_activation.h.
// moe_combine: out[t] (+)= sum_j weights[t*k+j] * y[t*k+j].
// Padding tokens need no special case (their rows are computed and ignored).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/gated_activation.h"
#include "kernels/cpu/moe_route.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/weight_layout.h"

namespace pipellm::cuda {

void moe_route(MoeRouting r, const float* logits, const float* bias, int n_tokens, int n_expert, int k, int32_t* ids,
               float* weights, const Launch& s);

struct MoeMatvecArgs {
  DeviceMatrix w;            // expert 0 (n_in, n_out = rows of one expert)
  size_t expert_bytes = 0;   // bytes between experts
  const int32_t* ids = nullptr;  // [n_pairs]
  int n_pairs = 0;
  const float* x = nullptr;  // [n_pairs / x_group][n_in]
  const int8_t* xq = nullptr;   // optional: x as 8-bit blocks [n_pairs / x_group][n_in]
  const float2* xds = nullptr;  //           and their scales [n_pairs / x_group][n_in / 32]
  int x_group = 1;
  const float* bias = nullptr;  // [n_expert][n_out] or null
  float* y = nullptr;        // [n_pairs][n_out]
};
void moe_matvec(const MoeMatvecArgs& a, const Launch& s);

void moe_gated_act(GatedAct act, float* g, const float* u, const float* bias_g, const float* bias_u, const int32_t* ids,
                   int n_pairs, int64_t n, const Launch& s);

// add: out += the sum (residual), else out = the sum.
void moe_combine(const float* y, const float* weights, int n_tokens, int k, int64_t n, float* out, bool add,
                 const Launch& s);

}  // namespace pipellm::cuda

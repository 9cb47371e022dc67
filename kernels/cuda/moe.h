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
// Decode in two launches instead of six (each a few microseconds of a step that reads little):
// moe_gated_matvec: the gate and up products of each pair and their activation in one launch,
//   y[p] = act(G_e x + bias_g_e, U_e x + bias_u_e), also written as the 8-bit blocks the down
//   product reads (yq/yds: rmsnorm_convert's arithmetic); equal bit for bit to moe_matvec (gate),
//   moe_matvec (up), moe_gated_act and rmsnorm_convert.
// moe_matvec_combine: the down product and moe_combine in one launch, out[t] (+)= sum_j
//   weights[t*k+j] * (W_e x[t*k+j] + bias_e) in j order; equal bit for bit to moe_matvec then
//   moe_combine.
// Both take only the 8-bit path (moe_*_supports say where; elsewhere the separate launches).
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

struct MoeGatedArgs {
  MoeMatvecArgs gate;         // x/xq/xds, ids, pairs, x_group, gate bias; y: the activated rows [n_pairs][n_out]
  DeviceMatrix up;            // the up stack: gate.w's type and shape
  size_t up_expert_bytes = 0;
  const float* up_bias = nullptr;  // [n_expert][n_out] or null
  GatedAct act = GatedAct::Silu;
  int8_t* yq = nullptr;       // y as 8-bit blocks [n_pairs][n_out]
  float2* yds = nullptr;      //   and their (scale, scaled sum) [n_pairs][n_out / 32]
};
bool moe_gated_matvec_supports(const MoeGatedArgs& a);
void moe_gated_matvec(const MoeGatedArgs& a, const Launch& s);

struct MoeCombineArgs {
  MoeMatvecArgs down;             // its x_group must be 1 and its y is unused
  const float* weights = nullptr;  // [n_pairs]
  int k = 1;                      // pairs per token: n_pairs / k tokens
  float* out = nullptr;           // [n_pairs / k][n_out] (not needed by moe_matvec_combine_supports)
  bool add = false;               // out += the sum (residual), else out = the sum
};
bool moe_matvec_combine_supports(const MoeCombineArgs& a);
void moe_matvec_combine(const MoeCombineArgs& a, const Launch& s);

void moe_gated_act(GatedAct act, float* g, const float* u, const float* bias_g, const float* bias_u, const int32_t* ids,
                   int n_pairs, int64_t n, const Launch& s);

// add: out += the sum (residual), else out = the sum.
void moe_combine(const float* y, const float* weights, int n_tokens, int k, int64_t n, float* out, bool add,
                 const Launch& s);

}  // namespace pipellm::cuda

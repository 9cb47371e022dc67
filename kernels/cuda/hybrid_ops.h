// The hybrid families' small elementwise ops on the GPU: the contracts of kernels/cpu/hybrid_ops.h
// (same names, same arguments, device pointers), usable inside CUDA graphs.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

void delta_gates(float* g, float* beta, const float* dt_bias, const float* a, int64_t n_rows, int n_heads,
                 const Launch& s);
void gated_rmsnorm(float* o, const float* z, const float* w, int64_t n_rows, int n_heads, int head, float eps,
                   const Launch& s);
void split_gated_q(const float* src, float* q, float* gate, int64_t n_rows, int n_head, int head_dim, const Launch& s);
void sigmoid_mul(float* x, const float* gate, int64_t n, const Launch& s);
void gate_dot_add(float* x, const float* y, const float* h, const float* w, int64_t n_rows, int64_t n, const Launch& s);
void per_layer_combine(float* proj, const float* tok, const float* norm_w, int64_t n_rows, int n_layer, int P,
                       float eps, const Launch& s);
void moe_scale_weights(float* weights, const int32_t* ids, const float* scale, int64_t n_pairs, const Launch& s);

}  // namespace pipellm::cuda

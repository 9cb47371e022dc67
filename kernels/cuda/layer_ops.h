// Small per-layer ops on the GPU that the architectures add around the products
// (references: kernels/cpu/gated_activation.h, kernels/cpu/rmsnorm.h).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/gated_activation.h"
#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

// x[t] += post(y[t] + bias) for n_rows rows of n floats, where post(v) = rmsnorm(v) * norm_w
// when norm_w is set (gemma's post-attention / post-FFN norms), else v. bias may be null.
// y rows y_stride apart, x rows x_stride apart.
void residual_add(float* x, int64_t x_stride, const float* y, int64_t y_stride, const float* bias, const float* norm_w,
                  float eps, int n_rows, int64_t n, const Launch& s);

// out[t][i] = act(g[t][i], u[t][i]) for n_rows rows of n; g, u rows `stride` apart (they may be
// the two halves of one fused [gate; up] row: u = g + n), out dense [n_rows][n].
void gated_act(GatedAct act, const float* g, const float* u, int64_t stride, int n_rows, int64_t n, float* out,
               const Launch& s);

// y[i] += bias[i % n] for n_rows rows of n (dense).
void add_bias(float* y, const float* bias, int n_rows, int64_t n, const Launch& s);

// logits[r][i] = cap * tanh(logits[r][i] / cap) for n_rows rows of n, rows `stride` apart.
void softcap(float* logits, int64_t stride, int n_rows, int64_t n, float cap, const Launch& s);

// x[i] *= scale over n floats (gemma's embedding scale).
void scale(float* x, int64_t n, float scale, const Launch& s);

}  // namespace pipellm::cuda

// Small elementwise ops of the hybrid families (qwen35's DeltaNet and gated attention, qwen35moe's
// shared expert, gemma4's per-layer inputs and expert scales): CPU references, mirrored by
// kernels/cuda/hybrid_ops.h (same names, same contracts).
#pragma once
#include <cstdint>

namespace pipellm {

// DeltaNet gates per row and value head h: beta = sigmoid(beta), g = softplus(g + dt_bias[h]) * a[h]
// (a = -exp(A_log) <= 0, so exp(g) is the decay). In place, [n_rows][n_heads].
void delta_gates(float* g, float* beta, const float* dt_bias, const float* a, int64_t n_rows, int n_heads);

// DeltaNet output gate per row and head of `head` values: o = rmsnorm(o) * w * silu(z).
// o, z: [n_rows][n_heads * head]; w: [head].
void gated_rmsnorm(float* o, const float* z, const float* w, int64_t n_rows, int n_heads, int head, float eps);

// qwen35's attn_q rows hold [q | gate] per head: src [n_rows][n_head * 2 * head_dim] into
// q and gate, each [n_rows][n_head * head_dim].
void split_gated_q(const float* src, float* q, float* gate, int64_t n_rows, int n_head, int head_dim);

// x[i] *= sigmoid(gate[i]) over n values.
void sigmoid_mul(float* x, const float* gate, int64_t n);

// Per row t: x[t] += sigmoid(w . h[t]) * y[t] (qwen35moe's gated shared expert); rows of n.
void gate_dot_add(float* x, const float* y, const float* h, const float* w, int64_t n_rows, int64_t n);

// gemma4's per-layer inputs: per row and layer, proj = (rmsnorm(proj) * norm_w + tok * sqrt(P)) / sqrt(2).
// proj, tok: [n_rows][n_layer * P]; norm_w: [P]. proj is updated in place.
void per_layer_combine(float* proj, const float* tok, const float* norm_w, int64_t n_rows, int n_layer, int P,
                       float eps);

// weights[p] *= scale[ids[p]] over n_pairs (token, expert) pairs (gemma4's per-expert scale).
void moe_scale_weights(float* weights, const int32_t* ids, const float* scale, int64_t n_pairs);

}  // namespace pipellm

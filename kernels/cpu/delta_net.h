// Gated DeltaNet (qwen35 / qwen35moe linear-attention layers), CPU reference, exactly as
// llama.cpp computes it (shared/fixtures/next/README.md has the derivation).
//
// Shapes: Hk key/query heads, Hv value heads (Hv a multiple of Hk), head size S (keys and values),
// conv kernel K. The projected input row of a token has C = 2*Hk*S + Hv*S channels laid out
// [q: Hk*S | k: Hk*S | v: Hv*S].
//
// delta_conv: causal depthwise convolution over time, then SiLU, per channel c:
//   y_t[c] = silu(sum_{j<K} w[c][j] * x_{t-K+1+j}[c])
// with the K-1 inputs before the first token taken from `state` ([K-1][C], oldest first; zeros
// for a new sequence); on return `state` holds the last K-1 inputs. w is ssm_conv1d as GGUF
// stores it: ne = [K, C], i.e. w[c][j] at c*K + j.
//
// delta_rule: for each token t in order and value head h (key head h % Hk):
//   q = q_t / max(||q_t||, eps), k = k_t / max(||k_t||, eps)       (L2 norm per head)
//   M = exp(g_t[h]) M;  d = beta_t[h] (v_t - M^T k);  M = M + k d^T;  o_t = M^T q / sqrt(S)
// M: the head's S x S state (row = key index i, column = value index m), float32, in `state`
// as [Hv][S][S] (zeros for a new sequence), updated in place. q, k rows [T][Hk*S], v [T][Hv*S]
// (rows *_stride floats apart), g (log decay, <= 0) and beta [T][Hv], out [T][Hv*S].
//
// delta_rule_chunked: the same result for many tokens at once through the chunked (WY) form
// llama.cpp's GPU backends use: chunks of `chunk` tokens, within a chunk the triangular solve of
// the delta rule's WY representation, across chunks the state. Equal to delta_rule within float
// rounding (it exists as the reference for the GPU's prefill kernel).
#pragma once
#include <cstdint>

namespace pipellm {

struct DeltaNetShape {
  int n_k_heads = 0;  // Hk (ssm.group_count)
  int n_v_heads = 0;  // Hv (ssm.time_step_rank)
  int head = 0;       // S  (ssm.state_size)
  int conv_kernel = 0;  // K
  int channels() const { return (2 * n_k_heads + n_v_heads) * head; }
  int64_t state_floats() const { return static_cast<int64_t>(n_v_heads) * head * head; }
  int64_t conv_state_floats() const { return static_cast<int64_t>(conv_kernel - 1) * channels(); }
};

void delta_conv(const DeltaNetShape& s, const float* w, const float* x, int64_t x_stride, int n_tokens, float* state,
                float* y, int64_t y_stride);

void delta_rule(const DeltaNetShape& s, const float* q, const float* k, int64_t qk_stride, const float* v,
                int64_t v_stride, const float* g, const float* beta, int n_tokens, float eps, float* state, float* out);

void delta_rule_chunked(const DeltaNetShape& s, const float* q, const float* k, int64_t qk_stride, const float* v,
                        int64_t v_stride, const float* g, const float* beta, int n_tokens, float eps, float* state,
                        float* out, int chunk = 64);

}  // namespace pipellm

#include "kernels/cpu/hybrid_ops.h"

#include <cmath>

#include "kernels/cpu/rmsnorm.h"

namespace pipellm {

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void delta_gates(float* g, float* beta, const float* dt_bias, const float* a, int64_t n_rows, int n_heads) {
  for (int64_t i = 0; i < n_rows * n_heads; ++i) {
    const int64_t h = i % n_heads;
    beta[i] = sigmoid(beta[i]);
    const float u = g[i] + dt_bias[h];
    g[i] = (u > 20.0f ? u : std::log1p(std::exp(u))) * a[h];  // softplus, linear beyond 20
  }
}

void gated_rmsnorm(float* o, const float* z, const float* w, int64_t n_rows, int n_heads, int head, float eps) {
  const int64_t n = int64_t{n_heads} * head;
  for (int64_t r = 0; r < n_rows; ++r) {
    float* row = o + r * n;
    rmsnorm_rows(row, w, n_heads, head, eps, row);
    for (int64_t i = 0; i < n; ++i) row[i] *= z[r * n + i] * sigmoid(z[r * n + i]);
  }
}

void split_gated_q(const float* src, float* q, float* gate, int64_t n_rows, int n_head, int head_dim) {
  const int64_t D = head_dim, QD = int64_t{n_head} * D;
  for (int64_t t = 0; t < n_rows; ++t) {
    for (int64_t h = 0; h < n_head; ++h) {
      const float* s = src + t * 2 * QD + h * 2 * D;
      for (int64_t i = 0; i < D; ++i) {
        q[t * QD + h * D + i] = s[i];
        gate[t * QD + h * D + i] = s[D + i];
      }
    }
  }
}

void sigmoid_mul(float* x, const float* gate, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= sigmoid(gate[i]);
}

void gate_dot_add(float* x, const float* y, const float* h, const float* w, int64_t n_rows, int64_t n) {
  for (int64_t t = 0; t < n_rows; ++t) {
    double dot = 0.0;
    for (int64_t i = 0; i < n; ++i) dot += static_cast<double>(w[i]) * h[t * n + i];
    const float gv = static_cast<float>(1.0 / (1.0 + std::exp(-dot)));
    for (int64_t i = 0; i < n; ++i) x[t * n + i] += gv * y[t * n + i];
  }
}

void per_layer_combine(float* proj, const float* tok, const float* norm_w, int64_t n_rows, int n_layer, int P,
                       float eps) {
  const int64_t LP = int64_t{n_layer} * P;
  const float sp = std::sqrt(static_cast<float>(P)), inv2 = 1.0f / std::sqrt(2.0f);
  for (int64_t t = 0; t < n_rows; ++t) {
    float* r = proj + t * LP;
    rmsnorm_rows(r, norm_w, n_layer, P, eps, r);
    for (int64_t i = 0; i < LP; ++i) r[i] = (r[i] + tok[t * LP + i] * sp) * inv2;
  }
}

void moe_scale_weights(float* weights, const int32_t* ids, const float* scale, int64_t n_pairs) {
  for (int64_t p = 0; p < n_pairs; ++p) weights[p] *= scale[ids[p]];
}

}  // namespace pipellm

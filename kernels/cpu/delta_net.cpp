#include "kernels/cpu/delta_net.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "base/error.h"

namespace pipellm {
namespace {

void check_shape(const DeltaNetShape& s, const char* op) {
  if (s.n_k_heads <= 0 || s.n_v_heads <= 0 || s.head <= 0 || s.n_v_heads % s.n_k_heads != 0)
    throw InvalidArgument(std::string(op) + ": bad DeltaNet shape (Hk " + std::to_string(s.n_k_heads) + ", Hv " +
                          std::to_string(s.n_v_heads) + ", S " + std::to_string(s.head) +
                          "; Hv must be a positive multiple of Hk)");
}

// 1 / max(||x||, eps) over n values, the sum of squares in double as ggml's l2_norm keeps it.
float inv_l2(const float* x, int n, float eps) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  return 1.0f / std::max(static_cast<float>(std::sqrt(ss)), eps);
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

void delta_conv(const DeltaNetShape& s, const float* w, const float* x, int64_t x_stride, int n_tokens, float* state,
                float* y, int64_t y_stride) {
  if (s.conv_kernel < 1) throw InvalidArgument("delta_conv: conv kernel " + std::to_string(s.conv_kernel) + " < 1");
  if (n_tokens <= 0) return;
  const int K = s.conv_kernel, C = s.channels(), H = K - 1;
  // Per channel: the K-1 carried inputs followed by this call's inputs, so the window of token t
  // is hist[t .. t+K-1]. x is read fully before y is written, so y may alias x.
  std::vector<float> hist(static_cast<size_t>(H + n_tokens));
  for (int c = 0; c < C; ++c) {
    for (int j = 0; j < H; ++j) hist[static_cast<size_t>(j)] = state[static_cast<int64_t>(j) * C + c];
    for (int t = 0; t < n_tokens; ++t) hist[static_cast<size_t>(H + t)] = x[t * x_stride + c];
    const float* wc = w + static_cast<int64_t>(c) * K;
    for (int t = 0; t < n_tokens; ++t) {
      float acc = 0.0f;
      for (int j = 0; j < K; ++j) acc += wc[j] * hist[static_cast<size_t>(t + j)];
      y[t * y_stride + c] = silu(acc);
    }
    for (int j = 0; j < H; ++j) state[static_cast<int64_t>(j) * C + c] = hist[static_cast<size_t>(n_tokens + j)];
  }
}

void delta_rule(const DeltaNetShape& s, const float* q, const float* k, int64_t qk_stride, const float* v,
                int64_t v_stride, const float* g, const float* beta, int n_tokens, float eps, float* state,
                float* out) {
  check_shape(s, "delta_rule");
  const int S = s.head, Hk = s.n_k_heads, Hv = s.n_v_heads;
  const float q_scale = 1.0f / std::sqrt(static_cast<float>(S));
  std::vector<float> qn(static_cast<size_t>(S)), kn(static_cast<size_t>(S)), d(static_cast<size_t>(S)),
      o(static_cast<size_t>(S));
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < Hv; ++h) {
      const int kh = h % Hk;  // value heads tile the key heads (llama.cpp's converter order)
      const float* qt = q + t * qk_stride + static_cast<int64_t>(kh) * S;
      const float* kt = k + t * qk_stride + static_cast<int64_t>(kh) * S;
      const float* vt = v + t * v_stride + static_cast<int64_t>(h) * S;
      const float qs = inv_l2(qt, S, eps) * q_scale, ks = inv_l2(kt, S, eps);
      for (int i = 0; i < S; ++i) {
        qn[static_cast<size_t>(i)] = qt[i] * qs;
        kn[static_cast<size_t>(i)] = kt[i] * ks;
      }
      const float decay = std::exp(g[static_cast<int64_t>(t) * Hv + h]);
      const float b = beta[static_cast<int64_t>(t) * Hv + h];
      float* M = state + static_cast<int64_t>(h) * S * S;
      // Pass 1: decay and M^T k (row-wise so the inner loop runs over contiguous values).
      std::fill(d.begin(), d.end(), 0.0f);
      for (int i = 0; i < S; ++i) {
        float* Mi = M + static_cast<int64_t>(i) * S;
        const float ki = kn[static_cast<size_t>(i)];
        for (int m = 0; m < S; ++m) {
          Mi[m] *= decay;
          d[static_cast<size_t>(m)] += Mi[m] * ki;
        }
      }
      for (int m = 0; m < S; ++m) d[static_cast<size_t>(m)] = b * (vt[m] - d[static_cast<size_t>(m)]);
      // Pass 2: rank-1 update and M^T q with the updated state.
      std::fill(o.begin(), o.end(), 0.0f);
      for (int i = 0; i < S; ++i) {
        float* Mi = M + static_cast<int64_t>(i) * S;
        const float ki = kn[static_cast<size_t>(i)], qi = qn[static_cast<size_t>(i)];
        for (int m = 0; m < S; ++m) {
          Mi[m] += ki * d[static_cast<size_t>(m)];
          o[static_cast<size_t>(m)] += Mi[m] * qi;
        }
      }
      std::copy(o.begin(), o.end(), out + static_cast<int64_t>(t) * Hv * S + static_cast<int64_t>(h) * S);
    }
  }
}

// Within a chunk of n tokens (G_a = cumulative sum of g up to token a, so the state decays by
// exp(G_a - G_b) from token b to token a; only differences inside the chunk are exponentiated,
// as llama.cpp does, which never overflows):
//   A[a][b] = beta_a exp(G_a - G_b) (k_a . k_b) for b < a  (strictly lower triangular)
//   (I + A) U = beta v,  (I + A) W = beta exp(G) k          (forward substitution)
//   D = U - W M0        (the delta-rule corrections d_a given the chunk's initial state M0)
//   o_a = exp(G_a) M0^T q_a + sum_{b<=a} exp(G_a - G_b) (q_a . k_b) d_b
//   M = exp(G_n) M0 + sum_b exp(G_n - G_b) k_b d_b^T
void delta_rule_chunked(const DeltaNetShape& s, const float* q, const float* k, int64_t qk_stride, const float* v,
                        int64_t v_stride, const float* g, const float* beta, int n_tokens, float eps, float* state,
                        float* out, int chunk) {
  check_shape(s, "delta_rule_chunked");
  if (chunk < 1) throw InvalidArgument("delta_rule_chunked: chunk size " + std::to_string(chunk) + " < 1");
  const int S = s.head, Hk = s.n_k_heads, Hv = s.n_v_heads;
  const float q_scale = 1.0f / std::sqrt(static_cast<float>(S));
  const size_t CS = static_cast<size_t>(chunk) * S;
  std::vector<float> Q(CS), Kc(CS), U(CS), W(CS), G(static_cast<size_t>(chunk)), B(static_cast<size_t>(chunk)),
      O(static_cast<size_t>(S));
  auto at = [S](std::vector<float>& m, int a) { return m.data() + static_cast<size_t>(a) * S; };
  for (int h = 0; h < Hv; ++h) {
    const int kh = h % Hk;
    float* M = state + static_cast<int64_t>(h) * S * S;
    for (int t0 = 0; t0 < n_tokens; t0 += chunk) {
      const int n = std::min(chunk, n_tokens - t0);
      float gsum = 0.0f;
      for (int a = 0; a < n; ++a) {
        const int t = t0 + a;
        const float* qt = q + t * qk_stride + static_cast<int64_t>(kh) * S;
        const float* kt = k + t * qk_stride + static_cast<int64_t>(kh) * S;
        const float qs = inv_l2(qt, S, eps) * q_scale, ks = inv_l2(kt, S, eps);
        for (int i = 0; i < S; ++i) {
          at(Q, a)[i] = qt[i] * qs;
          at(Kc, a)[i] = kt[i] * ks;
        }
        gsum += g[static_cast<int64_t>(t) * Hv + h];
        G[static_cast<size_t>(a)] = gsum;
        B[static_cast<size_t>(a)] = beta[static_cast<int64_t>(t) * Hv + h];
      }
      // Row a of A, then the forward substitution for U and W together.
      for (int a = 0; a < n; ++a) {
        const float ba = B[static_cast<size_t>(a)], Ga = G[static_cast<size_t>(a)];
        const float* va = v + (t0 + a) * v_stride + static_cast<int64_t>(h) * S;
        const float eg = std::exp(Ga);
        float* Ua = at(U, a);
        float* Wa = at(W, a);
        for (int i = 0; i < S; ++i) {
          Ua[i] = ba * va[i];
          Wa[i] = ba * eg * at(Kc, a)[i];
        }
        for (int b = 0; b < a; ++b) {
          float kk = 0.0f;
          for (int i = 0; i < S; ++i) kk += at(Kc, a)[i] * at(Kc, b)[i];
          const float Aab = ba * std::exp(Ga - G[static_cast<size_t>(b)]) * kk;
          const float* Ub = at(U, b);
          const float* Wb = at(W, b);
          for (int i = 0; i < S; ++i) {
            Ua[i] -= Aab * Ub[i];
            Wa[i] -= Aab * Wb[i];
          }
        }
      }
      // D = U - W M0 (kept in U), then the outputs, which need M0 too.
      for (int a = 0; a < n; ++a) {
        float* Ua = at(U, a);
        const float* Wa = at(W, a);
        for (int i = 0; i < S; ++i) {
          const float* Mi = M + static_cast<int64_t>(i) * S;
          const float wi = Wa[i];
          for (int m = 0; m < S; ++m) Ua[m] -= wi * Mi[m];
        }
      }
      for (int a = 0; a < n; ++a) {
        const float* Qa = at(Q, a);
        const float Ga = G[static_cast<size_t>(a)], eg = std::exp(Ga);
        std::fill(O.begin(), O.end(), 0.0f);
        for (int i = 0; i < S; ++i) {
          const float* Mi = M + static_cast<int64_t>(i) * S;
          const float qi = Qa[i] * eg;
          for (int m = 0; m < S; ++m) O[static_cast<size_t>(m)] += qi * Mi[m];
        }
        for (int b = 0; b <= a; ++b) {
          float qk = 0.0f;
          for (int i = 0; i < S; ++i) qk += Qa[i] * at(Kc, b)[i];
          const float c = qk * std::exp(Ga - G[static_cast<size_t>(b)]);
          const float* Db = at(U, b);
          for (int m = 0; m < S; ++m) O[static_cast<size_t>(m)] += c * Db[m];
        }
        std::copy(O.begin(), O.end(), out + static_cast<int64_t>(t0 + a) * Hv * S + static_cast<int64_t>(h) * S);
      }
      // The state at the chunk's end.
      const float Gn = G[static_cast<size_t>(n - 1)], en = std::exp(Gn);
      for (int i = 0; i < S; ++i) {
        float* Mi = M + static_cast<int64_t>(i) * S;
        for (int m = 0; m < S; ++m) Mi[m] *= en;
      }
      for (int b = 0; b < n; ++b) {
        const float eb = std::exp(Gn - G[static_cast<size_t>(b)]);
        const float* Kb = at(Kc, b);
        const float* Db = at(U, b);
        for (int i = 0; i < S; ++i) {
          float* Mi = M + static_cast<int64_t>(i) * S;
          const float ki = Kb[i] * eb;
          for (int m = 0; m < S; ++m) Mi[m] += ki * Db[m];
        }
      }
    }
  }
}

}  // namespace pipellm

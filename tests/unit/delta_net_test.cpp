// Gated DeltaNet CPU ops (kernels/cpu/delta_net.h) against float64 implementations written here
// from the formulas of shared/fixtures/next/README.md; the chunked form against the recurrence.
#include "kernels/cpu/delta_net.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "base/error.h"
#include "tests/random_data.h"

namespace pipellm {
namespace {

using test::normal_vec;
using test::uniform_vec;

// max |a - ref| / max |ref|
template <class A, class B>
double max_rel(const std::vector<A>& a, const std::vector<B>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  double err = 0.0, mag = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(static_cast<double>(a[i]))) return INFINITY;
    err = std::max(err, std::abs(static_cast<double>(a[i]) - static_cast<double>(ref[i])));
    mag = std::max(mag, std::abs(static_cast<double>(ref[i])));
  }
  return err / (mag > 0 ? mag : 1.0);
}

// The inputs of delta_rule for T tokens: q, k, v as views into one [T][C] row (the layout the
// conv output has), g <= 0 with decays 0.2-0.99 and beta in (0, 1) as in the real models.
struct RuleInputs {
  DeltaNetShape s;
  int T = 0;
  std::vector<float> qkv, g, beta;
  int64_t stride() const { return s.channels(); }
  const float* q(int t0 = 0) const { return qkv.data() + t0 * stride(); }
  const float* k(int t0 = 0) const { return q(t0) + static_cast<int64_t>(s.n_k_heads) * s.head; }
  const float* v(int t0 = 0) const { return q(t0) + 2 * static_cast<int64_t>(s.n_k_heads) * s.head; }
  const float* gp(int t0 = 0) const { return g.data() + static_cast<int64_t>(t0) * s.n_v_heads; }
  const float* bp(int t0 = 0) const { return beta.data() + static_cast<int64_t>(t0) * s.n_v_heads; }
};

RuleInputs make_inputs(int Hk, int Hv, int S, int T, uint64_t seed) {
  std::mt19937_64 rng(seed);
  RuleInputs in;
  in.s.n_k_heads = Hk;
  in.s.n_v_heads = Hv;
  in.s.head = S;
  in.s.conv_kernel = 4;
  in.T = T;
  in.qkv = normal_vec(static_cast<size_t>(T) * in.s.channels(), rng);
  in.g = uniform_vec(static_cast<size_t>(T) * Hv, rng, -1.6f, -0.01f);
  in.beta = uniform_vec(static_cast<size_t>(T) * Hv, rng, 0.05f, 0.95f);
  return in;
}

// The README's recurrence in float64, token by token: M = exp(g) M; d = beta (v - M^T k);
// M = M + k d^T; o = M^T q / sqrt(S), q and k L2-normalized per head, value head h on key head h % Hk.
void rule_f64(const RuleInputs& in, float eps, std::vector<double>& M, std::vector<double>& out) {
  const int S = in.s.head, Hk = in.s.n_k_heads, Hv = in.s.n_v_heads;
  out.assign(static_cast<size_t>(in.T) * Hv * S, 0.0);
  std::vector<double> q(static_cast<size_t>(S)), k(static_cast<size_t>(S)), d(static_cast<size_t>(S));
  for (int t = 0; t < in.T; ++t) {
    for (int h = 0; h < Hv; ++h) {
      const float* qt = in.q(t) + (h % Hk) * S;
      const float* kt = in.k(t) + (h % Hk) * S;
      const float* vt = in.v(t) + h * S;
      double nq = 0, nk = 0;
      for (int i = 0; i < S; ++i) {
        nq += static_cast<double>(qt[i]) * qt[i];
        nk += static_cast<double>(kt[i]) * kt[i];
      }
      nq = std::max(std::sqrt(nq), static_cast<double>(eps));
      nk = std::max(std::sqrt(nk), static_cast<double>(eps));
      for (int i = 0; i < S; ++i) {
        q[static_cast<size_t>(i)] = qt[i] / nq;
        k[static_cast<size_t>(i)] = kt[i] / nk;
      }
      const double decay = std::exp(static_cast<double>(in.g[static_cast<size_t>(t * Hv + h)]));
      const double b = in.beta[static_cast<size_t>(t * Hv + h)];
      double* Mh = M.data() + static_cast<size_t>(h) * S * S;
      for (int e = 0; e < S * S; ++e) Mh[e] *= decay;
      for (int m = 0; m < S; ++m) {
        double mk = 0;
        for (int i = 0; i < S; ++i) mk += Mh[i * S + m] * k[static_cast<size_t>(i)];
        d[static_cast<size_t>(m)] = b * (vt[m] - mk);
      }
      for (int i = 0; i < S; ++i)
        for (int m = 0; m < S; ++m) Mh[i * S + m] += k[static_cast<size_t>(i)] * d[static_cast<size_t>(m)];
      for (int m = 0; m < S; ++m) {
        double o = 0;
        for (int i = 0; i < S; ++i) o += Mh[i * S + m] * q[static_cast<size_t>(i)];
        out[static_cast<size_t>((t * Hv + h) * S + m)] = o / std::sqrt(static_cast<double>(S));
      }
    }
  }
}

struct Shape3 {
  int Hk, Hv, S;
};

TEST(DeltaNet, RuleHandComputed) {
  // S = 1: q and k normalize to their signs. M0 = 0: d = 0.5 * 5 = 2.5, M = -2.5, o = -2.5.
  // Token 2 (g = log 0.5, beta 1, k = +1, v = 1): M = -1.25, d = 1 - (-1.25) = 2.25, M = 1, o = -1.
  DeltaNetShape s{1, 1, 1, 4};
  const float q[2] = {2.0f, -0.5f}, k[2] = {-3.0f, 4.0f}, v[2] = {5.0f, 1.0f};
  const float g[2] = {std::log(0.5f), std::log(0.5f)}, beta[2] = {0.5f, 1.0f};
  float M = 0.0f, out[2];
  delta_rule(s, q, k, 1, v, 1, g, beta, 2, 1e-6f, &M, out);
  EXPECT_NEAR(out[0], -2.5f, 1e-6f);
  EXPECT_NEAR(out[1], -1.0f, 1e-6f);
  EXPECT_NEAR(M, 1.0f, 1e-6f);
}

TEST(DeltaNet, RuleMatchesFloat64) {
  const float eps = 1e-6f;
  uint64_t seed = 100;
  for (const Shape3 sh : {Shape3{1, 1, 16}, Shape3{2, 4, 32}, Shape3{2, 2, 64}, Shape3{1, 3, 8}, Shape3{4, 8, 128}}) {
    for (int T : {1, 2, 7, 200}) {
      if (sh.S == 128 && T > 7) continue;  // the float64 reference is slow at S = 128
      const RuleInputs in = make_inputs(sh.Hk, sh.Hv, sh.S, T, ++seed);
      std::mt19937_64 rng(seed * 7);
      // A used state (norm about that of the real models' states), not zeros.
      std::vector<float> M = normal_vec(static_cast<size_t>(in.s.state_floats()), rng, 0.1f);
      std::vector<double> M64(M.begin(), M.end()), ref;
      rule_f64(in, eps, M64, ref);
      std::vector<float> out(ref.size(), NAN);
      delta_rule(in.s, in.q(), in.k(), in.stride(), in.v(), in.stride(), in.gp(), in.bp(), T, eps, M.data(),
                 out.data());
      SCOPED_TRACE(::testing::Message() << "Hk " << sh.Hk << " Hv " << sh.Hv << " S " << sh.S << " T " << T);
      EXPECT_LT(max_rel(out, ref), 2e-5);
      EXPECT_LT(max_rel(M, M64), 2e-5);
    }
  }
}

TEST(DeltaNet, RuleZeroKeyUsesEps) {
  // An all-zero key normalizes to zero (x / eps), leaving the state only decayed.
  DeltaNetShape s{1, 1, 4, 4};
  std::vector<float> q = {1, 0, 0, 0}, k(4, 0.0f), v = {1, 2, 3, 4}, M(16, 1.0f), out(4);
  const float g = std::log(0.5f), beta = 0.5f;
  delta_rule(s, q.data(), k.data(), 4, v.data(), 4, &g, &beta, 1, 1e-6f, M.data(), out.data());
  for (float x : M) EXPECT_FLOAT_EQ(x, 0.5f);
  for (float x : out) EXPECT_FLOAT_EQ(x, 0.25f);  // row 0 of M (0.5) / sqrt(4)
}

TEST(DeltaNet, ChunkedEqualsRecurrent) {
  const float eps = 1e-6f;
  uint64_t seed = 300;
  for (const Shape3 sh : {Shape3{1, 1, 16}, Shape3{2, 4, 32}, Shape3{1, 2, 64}}) {
    for (int T : {1, 5, 64, 157}) {
      const RuleInputs in = make_inputs(sh.Hk, sh.Hv, sh.S, T, ++seed);
      std::mt19937_64 rng(seed * 3);
      const std::vector<float> M0 = normal_vec(static_cast<size_t>(in.s.state_floats()), rng, 0.1f);
      std::vector<float> Mr = M0, out_r(static_cast<size_t>(T) * sh.Hv * sh.S);
      delta_rule(in.s, in.q(), in.k(), in.stride(), in.v(), in.stride(), in.gp(), in.bp(), T, eps, Mr.data(),
                 out_r.data());
      for (int chunk : {1, 16, 64}) {
        std::vector<float> Mc = M0, out_c(out_r.size(), NAN);
        delta_rule_chunked(in.s, in.q(), in.k(), in.stride(), in.v(), in.stride(), in.gp(), in.bp(), T, eps, Mc.data(),
                           out_c.data(), chunk);
        SCOPED_TRACE(::testing::Message()
                     << "Hk " << sh.Hk << " Hv " << sh.Hv << " S " << sh.S << " T " << T << " chunk " << chunk);
        EXPECT_LT(max_rel(out_c, out_r), 1e-4);
        EXPECT_LT(max_rel(Mc, Mr), 1e-4);
      }
    }
  }
}

TEST(DeltaNet, ChunkedStrongDecay) {
  // Decays down to exp(-20) per token: exp(G) over a chunk of 64 underflows to 0 in float, which
  // the chunked form must survive (it exponentiates only differences and the running sum).
  const float eps = 1e-6f;
  RuleInputs in = make_inputs(2, 4, 32, 150, 77);
  std::mt19937_64 rng(5);
  in.g = uniform_vec(in.g.size(), rng, -20.0f, -0.01f);
  std::vector<float> Mr(static_cast<size_t>(in.s.state_floats()), 0.0f), Mc = Mr;
  std::vector<float> out_r(static_cast<size_t>(in.T) * 4 * 32), out_c(out_r.size(), NAN);
  delta_rule(in.s, in.q(), in.k(), in.stride(), in.v(), in.stride(), in.gp(), in.bp(), in.T, eps, Mr.data(),
             out_r.data());
  delta_rule_chunked(in.s, in.q(), in.k(), in.stride(), in.v(), in.stride(), in.gp(), in.bp(), in.T, eps, Mc.data(),
                     out_c.data(), 64);
  EXPECT_LT(max_rel(out_c, out_r), 1e-4);
  EXPECT_LT(max_rel(Mc, Mr), 1e-4);
}

TEST(DeltaNet, SplitCallsCarryState) {
  const float eps = 1e-6f;
  const int T = 120, T1 = 43;
  const RuleInputs in = make_inputs(2, 4, 32, T, 901);
  const int64_t os = static_cast<int64_t>(in.s.n_v_heads) * in.s.head;
  std::vector<float> M1(static_cast<size_t>(in.s.state_floats()), 0.0f), out1(static_cast<size_t>(T * os));
  delta_rule(in.s, in.q(), in.k(), in.stride(), in.v(), in.stride(), in.gp(), in.bp(), T, eps, M1.data(), out1.data());
  for (bool chunked : {false, true}) {
    std::vector<float> M2(M1.size(), 0.0f), out2(out1.size(), NAN);
    for (int t0 : {0, T1}) {
      const int n = t0 == 0 ? T1 : T - T1;
      if (chunked)
        delta_rule_chunked(in.s, in.q(t0), in.k(t0), in.stride(), in.v(t0), in.stride(), in.gp(t0), in.bp(t0), n, eps,
                           M2.data(), out2.data() + t0 * os, 16);
      else
        delta_rule(in.s, in.q(t0), in.k(t0), in.stride(), in.v(t0), in.stride(), in.gp(t0), in.bp(t0), n, eps,
                   M2.data(), out2.data() + t0 * os);
    }
    SCOPED_TRACE(chunked ? "chunked" : "recurrent");
    if (chunked) {
      EXPECT_LT(max_rel(out2, out1), 1e-4);
      EXPECT_LT(max_rel(M2, M1), 1e-4);
    } else {
      EXPECT_EQ(out2, out1);  // token by token, so a split changes nothing
      EXPECT_EQ(M2, M1);
    }
  }
}

// The conv in float64 over a whole sequence starting from zeros: y_t[c] = silu(sum_j w[c][j] x_{t-K+1+j}[c]).
std::vector<double> conv_f64(const DeltaNetShape& s, const std::vector<float>& w, const std::vector<float>& x, int T) {
  const int K = s.conv_kernel, C = s.channels();
  std::vector<double> y(static_cast<size_t>(T) * C);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) {
      double acc = 0;
      for (int j = 0; j < K; ++j) {
        const int tt = t - K + 1 + j;
        if (tt >= 0) acc += static_cast<double>(w[static_cast<size_t>(c * K + j)]) * x[static_cast<size_t>(tt * C + c)];
      }
      y[static_cast<size_t>(t * C + c)] = acc / (1.0 + std::exp(-acc));
    }
  return y;
}

TEST(DeltaNet, ConvMatchesFloat64AndCarriesState) {
  uint64_t seed = 500;
  for (int K : {1, 2, 4}) {
    DeltaNetShape s{2, 4, 8, K};
    const int C = s.channels(), T = 37;
    std::mt19937_64 rng(++seed);
    const std::vector<float> w = normal_vec(static_cast<size_t>(C) * K, rng, 0.5f);
    const std::vector<float> x = normal_vec(static_cast<size_t>(T) * C, rng);
    const std::vector<double> ref = conv_f64(s, w, x, T);
    // One call; then the same sequence as pieces of 1, 2 (< K-1 when K = 4), 1 and the rest,
    // written into a wider output row (stride C + 5) to check the strides.
    std::vector<float> st(static_cast<size_t>(s.conv_state_floats()), 0.0f), y(static_cast<size_t>(T) * C);
    delta_conv(s, w.data(), x.data(), C, T, st.data(), y.data(), C);
    SCOPED_TRACE(::testing::Message() << "K " << K);
    EXPECT_LT(max_rel(y, ref), 1e-6);
    std::vector<float> st_ref(st.size());  // the last K-1 inputs
    for (int j = 0; j < K - 1; ++j)
      for (int c = 0; c < C; ++c)
        st_ref[static_cast<size_t>(j * C + c)] = x[static_cast<size_t>((T - K + 1 + j) * C + c)];
    EXPECT_EQ(st, st_ref);

    const int ys = C + 5;
    std::vector<float> st2(st.size(), 0.0f), y2(static_cast<size_t>(T) * ys, NAN);
    int t0 = 0;
    for (int n : {1, 2, 1, T - 4}) {
      delta_conv(s, w.data(), x.data() + t0 * C, C, n, st2.data(), y2.data() + t0 * ys, ys);
      t0 += n;
    }
    std::vector<float> y2c(static_cast<size_t>(T) * C);
    for (int t = 0; t < T; ++t) std::copy_n(y2.data() + t * ys, C, y2c.data() + static_cast<size_t>(t) * C);
    EXPECT_EQ(y2c, y);
    EXPECT_EQ(st2, st);
  }
}

TEST(DeltaNet, ConvInPlace) {
  DeltaNetShape s{1, 2, 4, 4};
  const int C = s.channels(), T = 9;
  std::mt19937_64 rng(11);
  const std::vector<float> w = normal_vec(static_cast<size_t>(C) * 4, rng),
                           x = normal_vec(static_cast<size_t>(T) * C, rng);
  std::vector<float> st(static_cast<size_t>(s.conv_state_floats()), 0.0f), st2 = st, y(x.size()), xy = x;
  delta_conv(s, w.data(), x.data(), C, T, st.data(), y.data(), C);
  delta_conv(s, w.data(), xy.data(), C, T, st2.data(), xy.data(), C);
  EXPECT_EQ(xy, y);
  EXPECT_EQ(st2, st);
}

TEST(DeltaNet, RejectsBadShapes) {
  std::vector<float> buf(64, 0.0f);
  const float g = -0.1f, b = 0.5f;
  DeltaNetShape bad{2, 3, 4, 4};  // Hv not a multiple of Hk
  EXPECT_THROW(delta_rule(bad, buf.data(), buf.data(), 8, buf.data(), 12, &g, &b, 1, 1e-6f, buf.data(), buf.data()),
               InvalidArgument);
  DeltaNetShape ok{1, 1, 2, 4};
  EXPECT_THROW(
      delta_rule_chunked(ok, buf.data(), buf.data(), 6, buf.data(), 6, &g, &b, 1, 1e-6f, buf.data(), buf.data(), 0),
      InvalidArgument);
  DeltaNetShape k0{1, 1, 2, 0};
  EXPECT_THROW(delta_conv(k0, buf.data(), buf.data(), 6, 1, buf.data(), buf.data(), 6), InvalidArgument);
}

}  // namespace
}  // namespace pipellm

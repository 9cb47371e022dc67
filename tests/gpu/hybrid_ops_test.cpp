// The hybrid families' small GPU ops (kernels/cuda/hybrid_ops.h) against their CPU references
// (kernels/cpu/hybrid_ops.h) on random inputs.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/hybrid_ops.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/cuda/hybrid_ops.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/random_data.h"

namespace pipellm {
namespace {

std::vector<float> random_floats(size_t n, float lo, float hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return test::uniform_vec(n, rng, lo, hi);
}

cuda::DeviceBuffer<float> upload(const std::vector<float>& v) {
  cuda::DeviceBuffer<float> b(v.size());
  PIPELLM_CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  return b;
}

std::vector<float> download(const cuda::DeviceBuffer<float>& b, size_t n) {
  std::vector<float> v(n);
  PIPELLM_CUDA_CHECK(cudaMemcpy(v.data(), b.get(), n * sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1.0 + std::abs(want[i]))) << what << " at " << i;
  }
}

TEST(HybridOps, DeltaGatesAndGatedNorm) {
  PIPELLM_REQUIRE_GPU();
  const int rows = 37, heads = 8, head = 64;
  auto g = random_floats(rows * heads, -30.0f, 30.0f, 1), beta = random_floats(rows * heads, -5.0f, 5.0f, 2);
  const auto dt = random_floats(heads, -1.0f, 1.0f, 3), a = random_floats(heads, -2.0f, -0.01f, 4);
  auto dg = upload(g), db = upload(beta), ddt = upload(dt), da = upload(a);
  cuda::delta_gates(dg.get(), db.get(), ddt.get(), da.get(), rows, heads, nullptr);
  delta_gates(g.data(), beta.data(), dt.data(), a.data(), rows, heads);
  expect_close(download(dg, g.size()), g, 1e-6, "g");
  expect_close(download(db, beta.size()), beta, 1e-6, "beta");

  auto o = random_floats(rows * heads * head, -3.0f, 3.0f, 5);
  const auto z = random_floats(o.size(), -4.0f, 4.0f, 6), w = random_floats(head, 0.5f, 1.5f, 7);
  auto d_o = upload(o), dz = upload(z), dw = upload(w);
  cuda::gated_rmsnorm(d_o.get(), dz.get(), dw.get(), rows, heads, head, 1e-6f, nullptr);
  gated_rmsnorm(o.data(), z.data(), w.data(), rows, heads, head, 1e-6f);
  expect_close(download(d_o, o.size()), o, 1e-5, "gated_rmsnorm");
}

TEST(HybridOps, GatedQueriesAndSharedExpertGate) {
  PIPELLM_REQUIRE_GPU();
  const int rows = 9, n_head = 4, D = 64, QD = n_head * D;
  const auto src = random_floats(rows * 2 * QD, -2.0f, 2.0f, 8);
  std::vector<float> q(rows * QD), gate(rows * QD);
  split_gated_q(src.data(), q.data(), gate.data(), rows, n_head, D);
  auto dsrc = upload(src);
  cuda::DeviceBuffer<float> dq(q.size()), dgate(gate.size());
  cuda::split_gated_q(dsrc.get(), dq.get(), dgate.get(), rows, n_head, D, nullptr);
  EXPECT_EQ(download(dq, q.size()), q);
  EXPECT_EQ(download(dgate, gate.size()), gate);

  auto x = random_floats(q.size(), -1.0f, 1.0f, 9);
  auto dx = upload(x);
  cuda::sigmoid_mul(dx.get(), dgate.get(), static_cast<int64_t>(x.size()), nullptr);
  sigmoid_mul(x.data(), gate.data(), static_cast<int64_t>(x.size()));
  expect_close(download(dx, x.size()), x, 1e-6, "sigmoid_mul");

  const int E = 512;
  auto acc = random_floats(rows * E, -1.0f, 1.0f, 10);
  const auto y = random_floats(rows * E, -1.0f, 1.0f, 11), h = random_floats(rows * E, -1.0f, 1.0f, 12),
             wv = random_floats(E, -0.1f, 0.1f, 13);
  auto dacc = upload(acc), dy = upload(y), dh = upload(h), dwv = upload(wv);
  cuda::gate_dot_add(dacc.get(), dy.get(), dh.get(), dwv.get(), rows, E, nullptr);
  gate_dot_add(acc.data(), y.data(), h.data(), wv.data(), rows, E);
  expect_close(download(dacc, acc.size()), acc, 1e-5, "gate_dot_add");
}

TEST(HybridOps, PerLayerInputsAndExpertScales) {
  PIPELLM_REQUIRE_GPU();
  const int rows = 5, n_layer = 8, P = 32;
  auto proj = random_floats(rows * n_layer * P, -2.0f, 2.0f, 14);
  const auto tok = random_floats(proj.size(), -1.0f, 1.0f, 15), nw = random_floats(P, 0.5f, 1.5f, 16);
  auto dp = upload(proj), dt = upload(tok), dn = upload(nw);
  cuda::per_layer_combine(dp.get(), dt.get(), dn.get(), rows, n_layer, P, 1e-6f, nullptr);
  per_layer_combine(proj.data(), tok.data(), nw.data(), rows, n_layer, P, 1e-6f);
  expect_close(download(dp, proj.size()), proj, 1e-5, "per_layer_combine");

  const int pairs = 40, experts = 8;
  auto weights = random_floats(pairs, 0.0f, 1.0f, 17);
  const auto scale = random_floats(experts, 0.5f, 2.0f, 18);
  std::vector<int32_t> ids(pairs);
  for (int p = 0; p < pairs; ++p) ids[static_cast<size_t>(p)] = (p * 5) % experts;
  cuda::DeviceBuffer<int32_t> dids(ids.size());
  PIPELLM_CUDA_CHECK(cudaMemcpy(dids.get(), ids.data(), ids.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  auto dw = upload(weights), ds = upload(scale);
  cuda::moe_scale_weights(dw.get(), dids.get(), ds.get(), pairs, nullptr);
  moe_scale_weights(weights.data(), ids.data(), scale.data(), pairs);
  EXPECT_EQ(download(dw, weights.size()), weights);
}

}  // namespace
}  // namespace pipellm

// The CUDA ops of the architectures beyond llama (MoE routing and expert products, the small
// per-layer ops, YaRN RoPE, attention with a sliding window and sinks) against their CPU
// references (kernels/cpu) or float64, on fresh random inputs, outputs poisoned before each run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/gated_activation.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/moe_route.h"
#include "kernels/cpu/quantize.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda/layer_ops.h"
#include "kernels/cuda/matvec_quant.h"
#include "kernels/cuda/moe.h"
#include "kernels/cuda/rope.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

using test::ExpertStack;
using test::make_stack;
using test::random_floats;

constexpr GatedAct kActs[] = {GatedAct::Silu, GatedAct::GeluTanh, GatedAct::SwigluOai};

std::vector<int32_t> random_ids(size_t n, int n_expert) {
  std::vector<int32_t> v(n);
  for (auto& e : v) e = static_cast<int32_t>(test::rng()() % static_cast<uint64_t>(n_expert));
  return v;
}

// ---- MoE ----

TEST(ArchOps, MoeRouteMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  struct Shape {
    int n_expert, k;
  };
  for (MoeRouting r : {MoeRouting::SoftmaxTopK, MoeRouting::TopKSoftmax}) {
    for (Shape sh : {Shape{8, 2}, Shape{32, 4}, Shape{60, 4}, Shape{128, 8}, Shape{512, 32}, Shape{5, 5}}) {
      for (bool with_bias : {false, true}) {
        const int T = 67, X = sh.n_expert, K = sh.k;
        auto logits = random_floats(static_cast<size_t>(T) * X, -4, 4);
        auto bias = random_floats(static_cast<size_t>(X), -1, 1);
        // Ties: every third token's logits and every bias on a coarse grid (sums stay exact), so
        // equal values compete for the k places and the lower id must win.
        for (int t = 0; t < T; t += 3)
          for (int e = 0; e < X; ++e) logits[t * X + e] = std::round(logits[t * X + e] * 2) / 2;
        for (auto& b : bias) b = std::round(b * 2) / 2;
        auto dl = test::to_device(logits), db = test::to_device(bias);
        cuda::DeviceBuffer<int32_t> ids(static_cast<size_t>(T) * K);
        cuda::DeviceBuffer<float> w(ids.size());
        test::poison(ids);
        test::poison(w);
        cuda::moe_route(r, dl.get(), with_bias ? db.get() : nullptr, T, X, K, ids.get(), w.get(), nullptr);
        const auto gi = test::to_host(ids, ids.size());
        const auto gw = test::to_host(w, w.size());
        std::vector<float> l(static_cast<size_t>(X));
        std::vector<int32_t> ri(static_cast<size_t>(K));
        std::vector<float> rw(static_cast<size_t>(K));
        for (int t = 0; t < T; ++t) {
          for (int e = 0; e < X; ++e) l[e] = logits[t * X + e] + (with_bias ? bias[e] : 0.0f);
          moe_route(r, l.data(), X, K, ri.data(), rw.data());
          for (int j = 0; j < K; ++j) {
            ASSERT_EQ(gi[t * K + j], ri[j]) << moe_routing_name(r) << " X " << X << " k " << K << " token " << t
                                            << " place " << j;
            ASSERT_NEAR(gw[t * K + j], rw[j], 1e-6) << moe_routing_name(r) << " X " << X << " token " << t;
          }
        }
      }
    }
  }
}

// An expert stack [n_expert][n_out][n_in] quantized with the CPU quantizers: the GGUF bytes (for
// the CPU reference) and the device copy, each expert repacked on its own (weight_layout.h).
// The CPU product of expert e with one activation row (kernels/cpu/matmul.h on the expert's slice).
std::vector<float> cpu_expert(const ExpertStack& s, int e, const float* x) {
  std::vector<float> y(static_cast<size_t>(s.m.n_out));
  MatmulArgs a;
  a.type = s.m.type;
  a.w = s.gguf.data() + static_cast<size_t>(e) * s.expert_bytes;
  a.row_bytes = s.row_bytes;
  a.n_rows = s.m.n_out;
  a.n = s.m.n_in;
  a.x = x;
  a.x_stride = s.m.n_in;
  a.n_tokens = 1;
  a.y = y.data();
  a.y_stride = s.m.n_out;
  matmul(a, 0, 1);
  return y;
}

TEST(ArchOps, MoeMatvecMatchesCpuMatmul) {
  PIPELLM_REQUIRE_GPU();
  std::vector<TensorType> types = {TensorType::Q8_0, TensorType::Q4_K, TensorType::F32};
  if (can_quantize(TensorType::MXFP4) && cuda::cuda_supports(TensorType::MXFP4)) types.push_back(TensorType::MXFP4);
  struct Shape {
    int64_t n_in, n_out;
  };
  const int X = 8, T = 5, K = 3;
  for (TensorType t : types) {
    // 2880: gpt-oss's width; 100: not a multiple of 8 (the one-element path; F32 only).
    for (Shape sh : {Shape{512, 96}, Shape{2880, 72}, Shape{1024, 33}, Shape{100, 20}}) {
      if (sh.n_in % tensor_type_info(t).block_size != 0) continue;
      const ExpertStack st = make_stack(t, X, sh.n_in, sh.n_out);
      const auto bias = random_floats(static_cast<size_t>(X * sh.n_out));
      auto dbias = test::to_device(bias);
      for (int x_group : {K, 1}) {  // gate/up (a token's row for its k experts), down (a row per pair)
        for (bool with_bias : {false, true}) {
          const int P = T * K;
          const auto ids = random_ids(static_cast<size_t>(P), X);
          const auto x = random_floats(static_cast<size_t>(P / x_group * sh.n_in));
          auto dids = test::to_device(ids);
          auto dx = test::to_device(x);
          cuda::DeviceBuffer<float> y(static_cast<size_t>(P * sh.n_out));
          test::poison(y);
          cuda::MoeMatvecArgs a;
          a.w = st.m;
          a.expert_bytes = st.expert_bytes;
          a.ids = dids.get();
          a.n_pairs = P;
          a.x = dx.get();
          a.x_group = x_group;
          a.bias = with_bias ? dbias.get() : nullptr;
          a.y = y.get();
          cuda::moe_matvec(a, nullptr);
          const auto got = test::to_host(y, y.size());
          for (int p = 0; p < P; ++p) {
            auto ref = cpu_expert(st, ids[p], x.data() + (p / x_group) * sh.n_in);
            std::vector<double> rd(ref.begin(), ref.end());
            if (with_bias)
              for (int64_t r = 0; r < sh.n_out; ++r) rd[r] += bias[ids[p] * sh.n_out + r];
            const std::vector<float> g(got.begin() + p * sh.n_out, got.begin() + (p + 1) * sh.n_out);
            ASSERT_LT(test::rel_err(g, rd), 1e-5) << tensor_type_name(t) << " [" << sh.n_in << ", " << sh.n_out
                                                  << "] group " << x_group << " pair " << p << " expert " << ids[p];
          }
        }
      }
    }
  }
}

// The 8-bit path (the dense mat-vec's dp4a formats on 8-bit activation blocks) against float64
// products with the activations it was given (the blocks read back and decoded), as the dense
// kernels are checked (kernels_test.cpp): only the kernel's own rounding remains.
TEST(ArchOps, MoeMatvecOn8BitActivationsMatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  std::vector<TensorType> types = {TensorType::Q4_0, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K,
                                   TensorType::Q6_K};
  if (can_quantize(TensorType::MXFP4) && cuda::cuda_supports(TensorType::MXFP4)) types.push_back(TensorType::MXFP4);
  const int X = 8, T = 5, K = 3, P = T * K;
  for (TensorType t : types) {
    ASSERT_TRUE(cuda::matvec_uses_q8(t)) << tensor_type_name(t);
    const bool k_quant = t == TensorType::Q4_K || t == TensorType::Q5_K || t == TensorType::Q6_K;
    // Widths of whole items (256 for the K-quants), and rows not a multiple of the 8 per block.
    // Experts not 16-byte aligned (Q6_K rows of 1024, 2880-wide Q8_0) take the float kernel,
    // checked against the float activations instead.
    for (const int64_t n_in : {k_quant ? int64_t{512} : int64_t{2880}, int64_t{1024}, int64_t{2048}}) {
      const int64_t n_out = 37;
      const ExpertStack st = make_stack(t, X, n_in, n_out);
      const bool fast = st.expert_bytes % 16 == 0;
      const auto bias = random_floats(static_cast<size_t>(X * n_out));
      auto dbias = test::to_device(bias);
      for (int x_group : {K, 1}) {
        const int n_rows = P / x_group;
        const auto x = random_floats(static_cast<size_t>(n_rows * n_in));
        auto act = test::device_activations(x, n_rows, n_in);
        const auto ids = random_ids(static_cast<size_t>(P), X);
        auto dids = test::to_device(ids);
        cuda::DeviceBuffer<float> y(static_cast<size_t>(P * n_out));
        test::poison(y);
        cuda::MoeMatvecArgs a;
        a.w = st.m;
        a.expert_bytes = st.expert_bytes;
        a.ids = dids.get();
        a.n_pairs = P;
        a.x = act.x.get();
        a.xq = act.xq.get();
        a.xds = act.xds.get();
        a.x_group = x_group;
        a.bias = dbias.get();
        a.y = y.get();
        cuda::moe_matvec(a, nullptr);
        const auto got = test::to_host(y, y.size());
        for (int p = 0; p < P; ++p) {
          auto ref = cpu_expert(st, ids[p], (fast ? act.decoded.data() : x.data()) + (p / x_group) * n_in);
          std::vector<double> rd(ref.begin(), ref.end());
          for (int64_t r = 0; r < n_out; ++r) rd[r] += bias[ids[p] * n_out + r];
          const std::vector<float> g(got.begin() + p * n_out, got.begin() + (p + 1) * n_out);
          ASSERT_LT(test::rel_err(g, rd), 1e-5) << tensor_type_name(t) << " [" << n_in << ", " << n_out << "] group "
                                                << x_group << " pair " << p << (fast ? " (8-bit)" : " (float)");
        }
      }
    }
  }
}

TEST(ArchOps, MoeMatvecManyPairs) {
  PIPELLM_REQUIRE_GPU();
  // More pairs than one grid dimension holds (65535): the kernel strides over them.
  const int X = 4, P = 70001;
  const int64_t n_in = 64, n_out = 5;
  const ExpertStack st = make_stack(TensorType::F32, X, n_in, n_out);
  std::vector<float> w(st.gguf.size() / 4);
  std::memcpy(w.data(), st.gguf.data(), st.gguf.size());
  const auto ids = random_ids(static_cast<size_t>(P), X);
  const auto x = random_floats(static_cast<size_t>(P * n_in));
  auto dids = test::to_device(ids);
  auto dx = test::to_device(x);
  cuda::DeviceBuffer<float> y(static_cast<size_t>(P * n_out));
  test::poison(y);
  cuda::MoeMatvecArgs a;
  a.w = st.m;
  a.expert_bytes = st.expert_bytes;
  a.ids = dids.get();
  a.n_pairs = P;
  a.x = dx.get();
  a.y = y.get();
  cuda::moe_matvec(a, nullptr);
  const auto got = test::to_host(y, y.size());
  std::vector<double> ref(got.size());
  for (int p = 0; p < P; ++p)
    for (int64_t r = 0; r < n_out; ++r) {
      double s = 0;
      for (int64_t i = 0; i < n_in; ++i) s += static_cast<double>(w[(ids[p] * n_out + r) * n_in + i]) * x[p * n_in + i];
      ref[p * n_out + r] = s;
    }
  EXPECT_LT(test::rel_err(got, ref), 1e-6);
}

TEST(ArchOps, MoeMatvecRejectsUnsupportedType) {
  PIPELLM_REQUIRE_GPU();
  cuda::MoeMatvecArgs a;
  a.w.type = TensorType::Q8_1;  // an activation format, never a CUDA weight type
  a.w.n_in = 32;
  a.w.n_out = 1;
  a.expert_bytes = 1 << 20;
  a.n_pairs = 1;
  try {
    cuda::moe_matvec(a, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(tensor_type_name(TensorType::Q8_1)), std::string::npos) << e.what();
  }
}

// An activation the kernels have no case for fails by name before anything is launched (no GPU
// needed): the one dispatch (gated_act.cuh) serves the elementwise and the fused expert launches.
TEST(ArchOps, UnknownActivationIsRefusedByName) {
  const auto bad = static_cast<GatedAct>(99);
  try {
    cuda::gated_act(bad, nullptr, nullptr, 64, 1, 32, nullptr, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gated_act: unknown activation 99"), std::string::npos) << e.what();
  }
}

TEST(ArchOps, MoeGatedActMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  const int X = 5, P = 12;
  for (int64_t n : {640, 333}) {
    for (GatedAct act : kActs) {
      for (bool with_bias : {false, true}) {
        const auto g = random_floats(static_cast<size_t>(P * n), -10, 10), u = random_floats(g.size(), -10, 10);
        const auto bg = random_floats(static_cast<size_t>(X * n)), bu = random_floats(bg.size());
        const auto ids = random_ids(static_cast<size_t>(P), X);
        auto dg = test::to_device(g), du = test::to_device(u), dbg = test::to_device(bg), dbu = test::to_device(bu);
        auto dids = test::to_device(ids);
        cuda::moe_gated_act(act, dg.get(), du.get(), with_bias ? dbg.get() : nullptr, with_bias ? dbu.get() : nullptr,
                            dids.get(), P, n, nullptr);
        const auto got = test::to_host(dg, g.size());
        std::vector<float> gr(static_cast<size_t>(n)), ur(gr.size()), ref(gr.size());
        for (int p = 0; p < P; ++p) {
          for (int64_t i = 0; i < n; ++i) {
            gr[i] = g[p * n + i] + (with_bias ? bg[ids[p] * n + i] : 0.0f);
            ur[i] = u[p * n + i] + (with_bias ? bu[ids[p] * n + i] : 0.0f);
          }
          gated_activation(act, gr.data(), ur.data(), n, ref.data());
          for (int64_t i = 0; i < n; ++i)
            ASSERT_NEAR(got[p * n + i], ref[i], 1e-5 * std::max(1.0f, std::fabs(ref[i])))
                << gated_act_name(act) << " pair " << p << " i " << i << " g " << gr[i] << " u " << ur[i];
        }
      }
    }
  }
}

TEST(ArchOps, MoeCombineMatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  const int T = 7, K = 4;
  const int64_t n = 2880;
  for (bool add : {false, true}) {
    const auto y = random_floats(static_cast<size_t>(T * K * n)), w = random_floats(static_cast<size_t>(T * K), 0, 1);
    const auto out0 = random_floats(static_cast<size_t>(T * n));
    auto dy = test::to_device(y), dw = test::to_device(w), dout = test::to_device(out0);
    if (!add) test::poison(dout);
    cuda::moe_combine(dy.get(), dw.get(), T, K, n, dout.get(), add, nullptr);
    const auto got = test::to_host(dout, out0.size());
    std::vector<double> ref(got.size());
    for (int t = 0; t < T; ++t)
      for (int64_t i = 0; i < n; ++i) {
        double s = add ? out0[t * n + i] : 0.0;
        for (int j = 0; j < K; ++j) s += static_cast<double>(w[t * K + j]) * y[(t * K + j) * n + i];
        ref[t * n + i] = s;
      }
    EXPECT_LT(test::rel_err(got, ref), 1e-6) << "add " << add;
  }
}

// A whole MoE FFN block (gpt-oss style: router bias, expert biases, SwigluOai) captured once in a
// CUDA graph with PDL and replayed on new activations, against the CPU stage's arithmetic.
TEST(ArchOps, MoeBlockInCudaGraphMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  const TensorType t = can_quantize(TensorType::MXFP4) ? TensorType::MXFP4 : TensorType::Q8_0;
  const int X = 8, K = 2, T = 3, P = T * K;
  const int64_t E = 256, F = 128;
  const ExpertStack gate = make_stack(t, X, E, F), up = make_stack(t, X, E, F), down = make_stack(t, X, F, E);
  const auto rb = random_floats(static_cast<size_t>(X)), bg = random_floats(static_cast<size_t>(X * F)),
             bu = random_floats(static_cast<size_t>(X * F)), bd = random_floats(static_cast<size_t>(X * E));
  auto drb = test::to_device(rb), dbg = test::to_device(bg), dbu = test::to_device(bu), dbd = test::to_device(bd);
  cuda::DeviceBuffer<float> logits(static_cast<size_t>(T * X)), h(static_cast<size_t>(T * E)),
      out(static_cast<size_t>(T * E));
  cuda::DeviceBuffer<int32_t> ids(static_cast<size_t>(P));
  cuda::DeviceBuffer<float> wts(static_cast<size_t>(P)), g(static_cast<size_t>(P * F)), u(g.size()),
      y(static_cast<size_t>(P * E));
  cuda::Stream stream;
  const cuda::Launch l(stream.get(), true);
  cudaGraph_t graph = nullptr;
  PIPELLM_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  cuda::moe_route(MoeRouting::TopKSoftmax, logits.get(), drb.get(), T, X, K, ids.get(), wts.get(), l);
  cuda::MoeMatvecArgs a;
  a.ids = ids.get();
  a.n_pairs = P;
  a.x = h.get();
  a.x_group = K;
  a.w = gate.m;
  a.expert_bytes = gate.expert_bytes;
  a.y = g.get();
  cuda::moe_matvec(a, l);
  a.w = up.m;
  a.expert_bytes = up.expert_bytes;
  a.y = u.get();
  cuda::moe_matvec(a, l);
  cuda::moe_gated_act(GatedAct::SwigluOai, g.get(), u.get(), dbg.get(), dbu.get(), ids.get(), P, F, l);
  a.w = down.m;
  a.expert_bytes = down.expert_bytes;
  a.x = g.get();
  a.x_group = 1;
  a.bias = dbd.get();
  a.y = y.get();
  cuda::moe_matvec(a, l);
  cuda::moe_combine(y.get(), wts.get(), T, K, E, out.get(), true, l);
  PIPELLM_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &graph));
  cuda::GraphExec exec(graph);

  for (int round = 0; round < 3; ++round) {
    const auto hl = random_floats(static_cast<size_t>(T * X), -3, 3), hh = random_floats(static_cast<size_t>(T * E));
    const auto res = random_floats(static_cast<size_t>(T * E));
    PIPELLM_CUDA_CHECK(cudaMemcpy(logits.get(), hl.data(), hl.size() * 4, cudaMemcpyHostToDevice));
    PIPELLM_CUDA_CHECK(cudaMemcpy(h.get(), hh.data(), hh.size() * 4, cudaMemcpyHostToDevice));
    PIPELLM_CUDA_CHECK(cudaMemcpy(out.get(), res.data(), res.size() * 4, cudaMemcpyHostToDevice));
    PIPELLM_CUDA_CHECK(cudaDeviceSynchronize());  // the copies ran on the legacy stream, the graph does not wait for it
    exec.launch(stream.get());
    stream.synchronize();
    const auto got = test::to_host(out, out.size());
    std::vector<double> ref(res.begin(), res.end());
    for (int tok = 0; tok < T; ++tok) {
      std::vector<float> lg(static_cast<size_t>(X));
      for (int e = 0; e < X; ++e) lg[e] = hl[tok * X + e] + rb[e];
      std::vector<int32_t> ri(K);
      std::vector<float> rw(K);
      moe_route(MoeRouting::TopKSoftmax, lg.data(), X, K, ri.data(), rw.data());
      for (int j = 0; j < K; ++j) {
        const int e = ri[j];
        auto gr = cpu_expert(gate, e, hh.data() + tok * E), ur = cpu_expert(up, e, hh.data() + tok * E);
        for (int64_t i = 0; i < F; ++i) {
          gr[i] += bg[e * F + i];
          ur[i] += bu[e * F + i];
        }
        gated_activation(GatedAct::SwigluOai, gr.data(), ur.data(), F, gr.data());
        const auto dr = cpu_expert(down, e, gr.data());
        for (int64_t i = 0; i < E; ++i) ref[tok * E + i] += static_cast<double>(rw[j]) * (dr[i] + bd[e * E + i]);
      }
    }
    EXPECT_LT(test::rel_err(got, ref), 2e-5) << tensor_type_name(t) << " round " << round;
  }
}

// The fused decode launches (moe_gated_matvec, moe_matvec_combine) against the separate ones the
// stage otherwise runs (moe_matvec gate / up, moe_gated_act, rmsnorm_convert, moe_matvec down,
// moe_combine): the same bits; and each against the CPU products on the activations it read.
TEST(ArchOps, MoeFusedDecodeEqualsSeparateLaunches) {
  PIPELLM_REQUIRE_GPU();
  std::vector<TensorType> types = {TensorType::Q4_K, TensorType::Q6_K, TensorType::Q8_0, TensorType::Q4_0};
  if (can_quantize(TensorType::MXFP4) && cuda::cuda_supports(TensorType::MXFP4)) types.push_back(TensorType::MXFP4);
  const int X = 8, T = 3;
  for (TensorType t : types) {
    const bool k_quant = t == TensorType::Q4_K || t == TensorType::Q6_K;
    const int64_t E = 512, F = k_quant ? 256 : 96;  // F: 8 and 3 blocks of 32 rows per pair
    const ExpertStack gate = make_stack(t, X, E, F), up = make_stack(t, X, E, F), down = make_stack(t, X, F, E);
    for (const int K : {2, 8}) {
      for (const GatedAct act : {GatedAct::Silu, GatedAct::SwigluOai}) {
        for (const bool biases : {false, true}) {
          for (const bool add : {false, true}) {
            SCOPED_TRACE(std::string(tensor_type_name(t)) + " k " + std::to_string(K) + " " + gated_act_name(act) +
                         (biases ? " biases" : "") + (add ? " add" : ""));
            const int P = T * K;
            const auto x = random_floats(static_cast<size_t>(T * E));
            auto xa = test::device_activations(x, T, E);
            const auto ids = random_ids(static_cast<size_t>(P), X);
            const auto w = random_floats(static_cast<size_t>(P), 0, 1);
            const auto bg = random_floats(static_cast<size_t>(X * F)), bu = random_floats(static_cast<size_t>(X * F)),
                       bd = random_floats(static_cast<size_t>(X * E)), res = random_floats(static_cast<size_t>(T * E));
            auto dids = test::to_device(ids);
            auto dw = test::to_device(w), dbg = test::to_device(bg), dbu = test::to_device(bu), dbd = test::to_device(bd);

            // Separate launches.
            cuda::DeviceBuffer<float> g(static_cast<size_t>(P * F)), u(g.size()), y(static_cast<size_t>(P * E));
            auto out = test::to_device(res);
            cuda::MoeMatvecArgs a;
            a.ids = dids.get();
            a.n_pairs = P;
            a.x = xa.x.get();
            a.xq = xa.xq.get();
            a.xds = xa.xds.get();
            a.x_group = K;
            a.w = gate.m;
            a.expert_bytes = gate.expert_bytes;
            a.bias = biases ? dbg.get() : nullptr;
            a.y = g.get();
            cuda::moe_matvec(a, nullptr);
            const cuda::MoeMatvecArgs gate_args = a;  // the fused launches take the same arguments
            a.w = up.m;
            a.expert_bytes = up.expert_bytes;
            a.bias = biases ? dbu.get() : nullptr;
            a.y = u.get();
            cuda::moe_matvec(a, nullptr);
            cuda::moe_gated_act(act, g.get(), u.get(), nullptr, nullptr, dids.get(), P, F, nullptr);
            auto ga = test::device_activations(test::to_host(g, g.size()), P, F);
            a.w = down.m;
            a.expert_bytes = down.expert_bytes;
            a.x = ga.x.get();
            a.xq = ga.xq.get();
            a.xds = ga.xds.get();
            a.x_group = 1;
            a.bias = biases ? dbd.get() : nullptr;
            a.y = y.get();
            cuda::moe_matvec(a, nullptr);
            const cuda::MoeMatvecArgs down_args = a;
            cuda::moe_combine(y.get(), dw.get(), T, K, E, out.get(), add, nullptr);

            // Fused launches.
            cuda::DeviceBuffer<float> fg(g.size());
            cuda::DeviceBuffer<int8_t> fq(g.size());
            cuda::DeviceBuffer<float2> fds(g.size() / 32);
            auto fout = test::to_device(res);
            test::poison(fg);
            cuda::MoeGatedArgs ag;
            ag.gate = gate_args;
            ag.gate.y = fg.get();
            ag.up = up.m;
            ag.up_expert_bytes = up.expert_bytes;
            ag.up_bias = biases ? dbu.get() : nullptr;
            ag.act = act;
            ag.yq = fq.get();
            ag.yds = fds.get();
            ASSERT_TRUE(cuda::moe_gated_matvec_supports(ag));
            cuda::moe_gated_matvec(ag, nullptr);
            cuda::MoeCombineArgs ac;
            ac.down = down_args;  // on the fused launch's 8-bit rows
            ac.down.x = nullptr;
            ac.down.xq = fq.get();
            ac.down.xds = fds.get();
            ac.down.y = nullptr;
            ac.weights = dw.get();
            ac.k = K;
            ac.out = fout.get();
            ac.add = add;
            ASSERT_TRUE(cuda::moe_matvec_combine_supports(ac));
            cuda::moe_matvec_combine(ac, nullptr);

            const auto hg = test::to_host(g, g.size()), hfg = test::to_host(fg, fg.size());
            const auto hq = test::to_host(ga.xq, ga.xq.size()), hfq = test::to_host(fq, fq.size());
            const auto hds = test::to_host(ga.xds, ga.xds.size()), hfds = test::to_host(fds, fds.size());
            const auto ho = test::to_host(out, out.size()), hfo = test::to_host(fout, fout.size());
            ASSERT_EQ(0, std::memcmp(hg.data(), hfg.data(), hg.size() * sizeof(float))) << "activated rows";
            ASSERT_EQ(hq, hfq) << "8-bit rows";
            ASSERT_EQ(0, std::memcmp(hds.data(), hfds.data(), hds.size() * sizeof(float2))) << "block scales";
            ASSERT_EQ(0, std::memcmp(ho.data(), hfo.data(), ho.size() * sizeof(float))) << "combined rows";

            // The CPU's products on the activations each launch read (8-bit blocks decoded).
            for (int p = 0; p < P; ++p) {
              const int e = ids[p];
              auto gr = cpu_expert(gate, e, xa.decoded.data() + (p / K) * E);
              auto ur = cpu_expert(up, e, xa.decoded.data() + (p / K) * E);
              if (biases)
                for (int64_t i = 0; i < F; ++i) {
                  gr[i] += bg[e * F + i];
                  ur[i] += bu[e * F + i];
                }
              gated_activation(act, gr.data(), ur.data(), F, gr.data());
              const std::vector<float> got(hfg.begin() + p * F, hfg.begin() + (p + 1) * F);
              ASSERT_LT(test::rel_err(got, std::vector<double>(gr.begin(), gr.end())), 1e-5) << "pair " << p;
            }
            std::vector<double> ref(res.begin(), res.end());
            if (!add) std::fill(ref.begin(), ref.end(), 0.0);
            for (int p = 0; p < P; ++p) {
              const int e = ids[p], tok = p / K;
              const auto dr = cpu_expert(down, e, ga.decoded.data() + p * F);
              for (int64_t i = 0; i < E; ++i)
                ref[tok * E + i] += static_cast<double>(w[p]) * (dr[i] + (biases ? bd[e * E + i] : 0.0f));
            }
            EXPECT_LT(test::rel_err(hfo, ref), 1e-5);
          }
        }
      }
    }
  }
}

// ---- layer ops ----

TEST(ArchOps, ResidualAddMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  const float eps = 1e-6f;
  for (int64_t n : {256, 2880, 8192}) {
    for (int rows : {1, 5}) {
      for (bool with_bias : {false, true}) {
        for (bool with_norm : {false, true}) {
          const int64_t xs = n + 32, ys = n + 64;  // strided rows; the gaps must stay untouched
          const auto x0 = random_floats(static_cast<size_t>(rows * xs)), y = random_floats(static_cast<size_t>(rows * ys));
          const auto bias = random_floats(static_cast<size_t>(n)), nw = random_floats(static_cast<size_t>(n), 0.5f, 1.5f);
          auto dx = test::to_device(x0), dy = test::to_device(y), db = test::to_device(bias), dn = test::to_device(nw);
          cuda::residual_add(dx.get(), xs, dy.get(), ys, with_bias ? db.get() : nullptr, with_norm ? dn.get() : nullptr,
                             eps, rows, n, nullptr);
          const auto got = test::to_host(dx, x0.size());
          std::vector<float> v(static_cast<size_t>(n)), post(v.size());
          for (int r = 0; r < rows; ++r) {
            for (int64_t i = 0; i < n; ++i) v[i] = y[r * ys + i] + (with_bias ? bias[i] : 0.0f);
            if (with_norm) rmsnorm(v.data(), nw.data(), n, eps, post.data());
            else post = v;
            for (int64_t i = 0; i < n; ++i) {
              const float ref = x0[r * xs + i] + post[i];
              ASSERT_NEAR(got[r * xs + i], ref, 1e-5 * std::max(1.0f, std::fabs(ref)))
                  << "n " << n << " bias " << with_bias << " norm " << with_norm << " row " << r << " i " << i;
            }
            for (int64_t i = n; i < xs; ++i) ASSERT_EQ(got[r * xs + i], x0[r * xs + i]) << "gap written";
          }
        }
      }
    }
  }
}

TEST(ArchOps, GatedActMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  const int rows = 5;
  const int64_t n = 1000;
  for (GatedAct act : kActs) {
    for (bool fused : {false, true}) {
      // fused: one [gate; up] product row of 2n per token (u = g + n); else two dense arrays.
      const int64_t stride = fused ? 2 * n : n;
      const auto gbuf = random_floats(static_cast<size_t>(rows * stride), -10, 10);
      const auto ubuf = random_floats(static_cast<size_t>(rows * n), -10, 10);
      auto dg = test::to_device(gbuf), du = test::to_device(ubuf);
      const float* gp = dg.get();
      const float* up = fused ? dg.get() + n : du.get();
      cuda::DeviceBuffer<float> out(static_cast<size_t>(rows * n));
      test::poison(out);
      cuda::gated_act(act, gp, up, stride, rows, n, out.get(), nullptr);
      const auto got = test::to_host(out, out.size());
      std::vector<float> ref(static_cast<size_t>(n));
      for (int r = 0; r < rows; ++r) {
        const float* g = gbuf.data() + r * stride;
        const float* u = fused ? g + n : ubuf.data() + r * n;
        gated_activation(act, g, u, n, ref.data());
        for (int64_t i = 0; i < n; ++i)
          ASSERT_NEAR(got[r * n + i], ref[i], 1e-5 * std::max(1.0f, std::fabs(ref[i])))
              << gated_act_name(act) << " fused " << fused << " row " << r << " g " << g[i] << " u " << u[i];
      }
    }
  }
}

TEST(ArchOps, AddBiasSoftcapScale) {
  PIPELLM_REQUIRE_GPU();
  const int rows = 3;
  const int64_t n = 1000, stride = 1024;
  {
    const auto y = random_floats(static_cast<size_t>(rows * n)), b = random_floats(static_cast<size_t>(n));
    auto dy = test::to_device(y), db = test::to_device(b);
    cuda::add_bias(dy.get(), db.get(), rows, n, nullptr);
    const auto got = test::to_host(dy, y.size());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(got[i], y[i] + b[i % n]) << i;
  }
  for (float cap : {30.0f, 15.0f}) {
    const auto l = random_floats(static_cast<size_t>(rows * stride), -4 * cap, 4 * cap);
    auto dl = test::to_device(l);
    cuda::softcap(dl.get(), stride, rows, n, cap, nullptr);
    const auto got = test::to_host(dl, l.size());
    for (int r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < n; ++i) {
        const double ref = cap * std::tanh(static_cast<double>(l[r * stride + i]) / cap);
        ASSERT_NEAR(got[r * stride + i], ref, 4e-7 * cap) << "cap " << cap << " in " << l[r * stride + i];
      }
      for (int64_t i = n; i < stride; ++i) ASSERT_EQ(got[r * stride + i], l[r * stride + i]) << "gap written";
    }
  }
  {
    const auto x = random_floats(12345);
    auto dx = test::to_device(x);
    cuda::scale(dx.get(), static_cast<int64_t>(x.size()), 48.0f, nullptr);
    const auto got = test::to_host(dx, x.size());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], x[i] * 48.0f) << i;
  }
}

// ---- RoPE with YaRN ----

TEST(ArchOps, RopeYarnMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  struct Case {
    const char* name;
    float ext_factor, attn_factor, freq_scale, base;
    bool neox, factors;
  };
  // gpt-oss: YaRN x32 over 4096 trained positions; a plain rope with only a magnitude; YaRN with
  // rope factors and the normal pairing.
  for (const Case c : {Case{"gpt-oss yarn", 1.0f, 1.0f, 1.0f / 32, 150000.0f, true, false},
                       Case{"magnitude only", 0.0f, 0.7f, 0.25f, 10000.0f, false, false},
                       Case{"yarn, factors, normal", 1.0f, 0.9f, 0.125f, 500000.0f, false, true}}) {
    const int T = 5, H = 8, Hkv = 2, D = 64, n_rot = 64, n_ctx = 140000, n_slots = 1;
    const std::vector<int32_t> pos = {0, 1, 4095, 4873, 131000}, slot(T, 0);
    const auto q = random_floats(T * H * D), k = random_floats(T * Hkv * D), v = random_floats(T * Hkv * D);
    const auto ff = random_floats(n_rot / 2, 1, 4);
    float corr[2];
    rope_yarn_corr_dims(n_rot, 4096, c.base, 32.0f, 1.0f, corr);
    auto dq = test::to_device(q), dk = test::to_device(k), dv = test::to_device(v), dff = test::to_device(ff);
    auto dpos = test::to_device(pos), dslot = test::to_device(slot);
    cuda::DeviceBuffer<__half> kc(static_cast<size_t>(n_slots) * n_ctx * Hkv * D), vc(kc.size());
    cuda::RopeKvArgs a = test::dense_rope_args(T, H, Hkv, D, dq.get(), dk.get(), dv.get());
    a.pos = dpos.get();
    a.slot = dslot.get();
    a.k_cache = kc.get();
    a.v_cache = vc.get();
    a.n_ctx = n_ctx;
    a.n_rot = n_rot;
    a.base = c.base;
    a.freq_scale = c.freq_scale;
    a.freq_factors = c.factors ? dff.get() : nullptr;
    a.neox = c.neox;
    a.ext_factor = c.ext_factor;
    a.attn_factor = c.attn_factor;
    a.corr_dims[0] = corr[0];
    a.corr_dims[1] = corr[1];
    cuda::rope_kv_store(a, nullptr);
    const auto gq = test::to_host(dq, q.size());
    RopeParams rp;
    rp.n_rot = n_rot;
    rp.base = c.base;
    rp.freq_scale = c.freq_scale;
    rp.freq_factors = c.factors ? ff.data() : nullptr;
    rp.mode = c.neox ? RopeMode::Neox : RopeMode::Normal;
    rp.ext_factor = c.ext_factor;
    rp.attn_factor = c.attn_factor;
    rp.corr_dims[0] = corr[0];
    rp.corr_dims[1] = corr[1];
    for (int t = 0; t < T; ++t) {
      std::vector<float> rq(q.begin() + t * H * D, q.begin() + (t + 1) * H * D);
      std::vector<float> rk(k.begin() + t * Hkv * D, k.begin() + (t + 1) * Hkv * D);
      rope(rp, pos[t], rq.data(), H, D);
      rope(rp, pos[t], rk.data(), Hkv, D);
      for (int i = 0; i < H * D; ++i)
        ASSERT_NEAR(gq[t * H * D + i], rq[i], 2e-6 * std::max(1.0f, std::fabs(rq[i])))
            << c.name << " q token " << t << " i " << i;
      std::vector<__half> gk(static_cast<size_t>(Hkv * D));
      const size_t row = static_cast<size_t>(pos[t]) * Hkv * D;
      PIPELLM_CUDA_CHECK(cudaMemcpy(gk.data(), kc.get() + row, gk.size() * 2, cudaMemcpyDeviceToHost));
      for (int i = 0; i < Hkv * D; ++i)
        ASSERT_NEAR(__half2float(gk[i]), rk[i], 1e-3 * std::max(1.0f, std::fabs(rk[i]))) << c.name << " k " << t;
    }
  }
}

// ---- attention with a sliding window and sinks ----

struct AttnCase {
  int D, G, window;
  bool sinks;
  int splits_target;
  bool window_splits;  // splits sized for the window's keys only (else for all n_ctx keys)
};

std::string describe(const AttnCase& c) {
  return "D " + std::to_string(c.D) + " G " + std::to_string(c.G) + " window " + std::to_string(c.window) +
         " sinks " + std::to_string(c.sinks) + " splits_target " + std::to_string(c.splits_target) +
         (c.window_splits ? " (window splits)" : "");
}

// The CPU reference (kernels/cpu/attention.h) on the same f16 cache.
std::vector<double> cpu_attention(const AttnCase& c, int Hkv, int n_ctx, const std::vector<float>& q,
                                  const std::vector<__half>& kc, const std::vector<__half>& vc,
                                  const std::vector<int32_t>& pos, const std::vector<int32_t>& slot,
                                  const std::vector<float>& sinks) {
  const int T = static_cast<int>(pos.size()), H = Hkv * c.G;
  const size_t row_bytes = static_cast<size_t>(Hkv) * c.D * 2;
  std::vector<int32_t> n_kv(T);
  std::vector<const uint8_t*> kp(T), vp(T);
  for (int t = 0; t < T; ++t) {
    n_kv[t] = std::max(0, pos[t] + 1);
    kp[t] = reinterpret_cast<const uint8_t*>(kc.data()) + static_cast<size_t>(slot[t]) * n_ctx * row_bytes;
    vp[t] = reinterpret_cast<const uint8_t*>(vc.data()) + static_cast<size_t>(slot[t]) * n_ctx * row_bytes;
  }
  std::vector<float> out(static_cast<size_t>(T) * H * c.D);
  AttentionArgs a;
  a.n_tokens = T;
  a.n_head = H;
  a.n_head_kv = Hkv;
  a.head_dim = c.D;
  a.head_dim_v = c.D;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  a.q = q.data();
  a.q_stride = H * c.D;
  a.out = out.data();
  a.out_stride = H * c.D;
  a.n_kv = n_kv.data();
  a.k = kp.data();
  a.v = vp.data();
  a.k_row_bytes = row_bytes;
  a.v_row_bytes = row_bytes;
  a.kv_type = TensorType::F16;
  a.window = c.window;
  a.sinks = c.sinks ? sinks.data() : nullptr;
  attention(a, 0, 1);
  return std::vector<double>(out.begin(), out.end());
}

TEST(ArchOps, AttentionWindowSinksMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  std::vector<AttnCase> cases;
  for (int D : {64, 128, 256})
    for (int G : {1, 4, 8})
      for (int window : {0, 1, 5, 128})
        for (bool sinks : {false, true})
          for (int splits_target : {1, 64})
            for (bool ws : {false, true}) {
              if (ws && window == 0) continue;
              if (D == 256 && G == 8 && splits_target == 1) continue;  // keep the run short
              cases.push_back({D, G, window, sinks, splits_target, ws});
            }
  const int Hkv = 2, n_ctx = 300, n_slots = 2;
  const std::vector<int32_t> pos = {0, 299, 130, 64, 4, 127, 128, -1}, slot = {0, 1, 0, 1, 1, 0, 1, 0};
  const int T = static_cast<int>(pos.size());
  for (const AttnCase& c : cases) {
    const int H = Hkv * c.G, D = c.D;
    const auto q = random_floats(static_cast<size_t>(T * H * D));
    const auto sinks = random_floats(static_cast<size_t>(H), -1, 3);
    std::vector<__half> kc(static_cast<size_t>(n_slots) * n_ctx * Hkv * D), vc(kc.size());
    for (auto& e : kc) e = __float2half(test::uniform(-1, 1));
    for (auto& e : vc) e = __float2half(test::uniform(-1, 1));
    auto dq = test::to_device(q), ds = test::to_device(sinks);
    auto dpos = test::to_device(pos), dslot = test::to_device(slot);
    auto dk = test::to_device(kc), dv = test::to_device(vc);
    cuda::DeviceBuffer<float> out(static_cast<size_t>(T * H * D));
    test::poison(out);
    cuda::AttentionArgs a = test::dense_attention_args(T, H, Hkv, D, dq.get(), out.get(), dk.get(),
                                                       dv.get(), n_ctx, dpos.get(), dslot.get());
    a.window = c.window;
    a.sinks = c.sinks ? ds.get() : nullptr;
    const int bound = c.window_splits ? std::min(c.window, n_ctx) : n_ctx;
    cuda::attention_split(bound, T, Hkv, c.splits_target, &a.n_splits, &a.keys_per_split);
    cuda::DeviceBuffer<float> part(static_cast<size_t>(cuda::attention_scratch_floats(T, H, D, a.n_splits)));
    test::poison(part);
    a.partial = part.get();
    const auto ref = cpu_attention(c, Hkv, n_ctx, q, kc, vc, pos, slot, sinks);
    // The CUDA-core kernel, then (head sizes it takes) the tensor-core one, whose f16 rounding of
    // Q and of the probabilities moves outputs by about 2^-11 relative (gpu_test_util.h's bounds).
    for (const bool tc : {false, true}) {
      a.tensor_cores = tc;
      if (tc && !cuda::attention_mma_supports(a)) continue;
      test::poison(out);
      cuda::attention(a, nullptr);
      const auto got = test::to_host(out, out.size());
      const double all = tc ? test::kTensorCoreAttentionRms : 2e-5, token = tc ? test::kTensorCoreAttentionToken : 1e-4;
      EXPECT_LT(test::rel_err(got, ref), all) << describe(c) << " splits " << a.n_splits << " tensor cores " << tc;
      for (int t = 0; t < T; ++t) {
        std::vector<float> gt(got.begin() + t * H * D, got.begin() + (t + 1) * H * D);
        std::vector<double> rt(ref.begin() + t * H * D, ref.begin() + (t + 1) * H * D);
        ASSERT_LT(test::rel_err(gt, rt), token) << describe(c) << " token " << t << " pos " << pos[t] << " tensor cores " << tc;
      }
      for (int i = 0; i < H * D; ++i) ASSERT_EQ(got[(T - 1) * H * D + i], 0.0f) << "padding token, " << describe(c);
    }
  }
}

// A prompt chunk (one slot, consecutive positions) with several tokens per tensor-core block
// (AttentionArgs::tokens_per_block): each row masks the keys outside its own token's range. Against
// the CPU reference within the tensor-core bounds; without a window the block's chunks are the
// one-token blocks' and the extra chunks are wholly masked, so the outputs are the same bits.
TEST(ArchOps, AttentionPromptChunkBlocksMatchCpu) {
  PIPELLM_REQUIRE_GPU();
  const int Hkv = 2, n_ctx = 300, n_slots = 2, T = 45, p0 = 120;
  std::vector<int32_t> pos(T), slot(T, 1);
  for (int t = 0; t < T; ++t) pos[static_cast<size_t>(t)] = p0 + t;
  auto dpos = test::to_device(pos), dslot = test::to_device(slot);
  for (int D : {64, 128, 256})
    for (int G : {1, 2, 4, 8})
      for (int window : {0, 37})
        for (bool sinks : {false, true}) {
          const AttnCase c{D, G, window, sinks, 1, false};
          const int H = Hkv * G;
          const auto q = random_floats(static_cast<size_t>(T * H * D));
          const auto sk = random_floats(static_cast<size_t>(H), -1, 3);
          std::vector<__half> kc(static_cast<size_t>(n_slots) * n_ctx * Hkv * D), vc(kc.size());
          for (auto& e : kc) e = __float2half(test::uniform(-1, 1));
          for (auto& e : vc) e = __float2half(test::uniform(-1, 1));
          auto dq = test::to_device(q), ds = test::to_device(sk);
          auto dk = test::to_device(kc), dv = test::to_device(vc);
          cuda::DeviceBuffer<float> out(static_cast<size_t>(T * H * D));
          cuda::AttentionArgs a = test::dense_attention_args(T, H, Hkv, D, dq.get(), out.get(), dk.get(), dv.get(),
                                                             n_ctx, dpos.get(), dslot.get());
          a.window = window;
          a.sinks = sinks ? ds.get() : nullptr;
          a.tensor_cores = true;
          cuda::attention_split(p0 + T, T, Hkv, 1, &a.n_splits, &a.keys_per_split);
          ASSERT_EQ(a.n_splits, 1);
          cuda::DeviceBuffer<float> part(static_cast<size_t>(cuda::attention_scratch_floats(T, H, D, 1)));
          a.partial = part.get();
          const auto ref = cpu_attention(c, Hkv, n_ctx, q, kc, vc, pos, slot, sk);
          test::poison(out);
          cuda::attention(a, nullptr);
          const auto one = test::to_host(out, out.size());
          a.tokens_per_block = cuda::attention_tokens_per_block(a);
          ASSERT_EQ(a.tokens_per_block, 16 / G) << describe(c);
          test::poison(out);
          cuda::attention(a, nullptr);
          const auto got = test::to_host(out, out.size());
          EXPECT_LT(test::rel_err(got, ref), test::kTensorCoreAttentionRms) << describe(c);
          for (int t = 0; t < T; ++t) {
            std::vector<float> gt(got.begin() + t * H * D, got.begin() + (t + 1) * H * D);
            std::vector<double> rt(ref.begin() + t * H * D, ref.begin() + (t + 1) * H * D);
            ASSERT_LT(test::rel_err(gt, rt), test::kTensorCoreAttentionToken) << describe(c) << " token " << t;
          }
          if (window == 0) {
            EXPECT_EQ(got, one) << describe(c) << ": differs from one token a block";
          }
          a.tokens_per_block = 16 / G + 1;  // more rows than a block has
          EXPECT_THROW(cuda::attention(a, nullptr), Error) << describe(c);
        }
}

// Decode under a CUDA graph: one capture for the context bucket (splits for all n_ctx keys), the
// positions rewritten in device memory before each replay; the window moves with them.
TEST(ArchOps, AttentionWindowInCudaGraph) {
  PIPELLM_REQUIRE_GPU();
  const AttnCase c{64, 4, 37, true, 132, false};
  const int Hkv = 2, H = Hkv * c.G, D = c.D, n_ctx = 1024, n_slots = 3, T = 3;
  std::vector<__half> kc(static_cast<size_t>(n_slots) * n_ctx * Hkv * D), vc(kc.size());
  for (auto& e : kc) e = __float2half(test::uniform(-1, 1));
  for (auto& e : vc) e = __float2half(test::uniform(-1, 1));
  const auto sinks = random_floats(static_cast<size_t>(H), -1, 3);
  const std::vector<int32_t> slot = {2, 0, 1};
  auto dk = test::to_device(kc), dv = test::to_device(vc);
  auto ds = test::to_device(sinks);
  auto dslot = test::to_device(slot);
  cuda::DeviceBuffer<float> q(static_cast<size_t>(T * H * D)), out(q.size());
  cuda::DeviceBuffer<int32_t> pos(static_cast<size_t>(T));
  cuda::AttentionArgs a = test::dense_attention_args(T, H, Hkv, D, q.get(), out.get(), dk.get(),
                                                     dv.get(), n_ctx, pos.get(), dslot.get());
  a.window = c.window;
  a.sinks = ds.get();
  cuda::attention_split(n_ctx, T, Hkv, c.splits_target, &a.n_splits, &a.keys_per_split);
  ASSERT_GT(a.n_splits, 1) << "the test wants splits wholly outside the window";
  cuda::DeviceBuffer<float> part(static_cast<size_t>(cuda::attention_scratch_floats(T, H, D, a.n_splits)));
  a.partial = part.get();
  cuda::Stream stream;
  cudaGraph_t graph = nullptr;
  PIPELLM_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  cuda::attention(a, cuda::Launch(stream.get(), true));
  PIPELLM_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &graph));
  cuda::GraphExec exec(graph);
  for (const std::vector<int32_t>& p : {std::vector<int32_t>{0, 36, 37}, std::vector<int32_t>{1023, 500, -1},
                                        std::vector<int32_t>{100, 1000, 700}}) {
    const auto hq = random_floats(q.size());
    PIPELLM_CUDA_CHECK(cudaMemcpy(q.get(), hq.data(), hq.size() * 4, cudaMemcpyHostToDevice));
    PIPELLM_CUDA_CHECK(cudaMemcpy(pos.get(), p.data(), p.size() * 4, cudaMemcpyHostToDevice));
    test::poison(out);
    PIPELLM_CUDA_CHECK(cudaDeviceSynchronize());  // the copies ran on the legacy stream, the graph does not wait for it
    exec.launch(stream.get());
    stream.synchronize();
    const auto got = test::to_host(out, out.size());
    const auto ref = cpu_attention(c, Hkv, n_ctx, hq, kc, vc, p, slot, sinks);
    EXPECT_LT(test::rel_err(got, ref), 2e-5) << "positions " << p[0] << " " << p[1] << " " << p[2];
  }
}

}  // namespace
}  // namespace pipellm

// Every CUDA kernel against its CPU reference (kernels/cpu) or a float64 computation, on fresh
// random inputs, with outputs poisoned before each run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_mma.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/matvec_quant.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

using test::random_floats;

using test::cpu_dequant;

class PerType : public ::testing::TestWithParam<TensorType> {};

TEST_P(PerType, DequantizeMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  const TensorType t = GetParam();
  // Rows of 20 float elements take the one-element-per-thread path, the others groups of 8.
  for (const int64_t width : {int64_t{512}, int64_t{20}}) {
    if (width % tensor_type_info(t).block_size != 0) continue;
    const int64_t n_out = 7;
    const auto blocks = test::random_blocks(t, n_out * width / tensor_type_info(t).block_size);
    auto m = test::upload_matrix(t, width, n_out, blocks);
    cuda::DeviceBuffer<float> out(static_cast<size_t>(width * n_out));
    cuda::DeviceBuffer<__half> out16(static_cast<size_t>(width * n_out));
    test::poison(out);
    cuda::dequantize_f32(m.m, out.get(), nullptr);
    cuda::dequantize_f16(m.m, out16.get(), nullptr);
    const auto got = test::to_host(out, out.size());
    const auto got16 = test::to_host(out16, out16.size());
    const auto ref = cpu_dequant(t, blocks, width, n_out);
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(got[i], ref[i], 1e-6 * std::max(1.0f, std::fabs(ref[i]))) << tensor_type_name(t) << " element " << i;
      ASSERT_EQ(__half2float(got16[i]), __half2float(__float2half_rn(got[i]))) << tensor_type_name(t) << " f16 " << i;
    }
    // Row slices (how products dequantize large matrices): rows 2..5 and the last row alone
    // are the whole matrix's rows; repacked types keep all scales after all quants, so a slice
    // must index blocks of the whole matrix.
    for (const auto& [first, rows] : {std::pair<int64_t, int64_t>{2, 4}, {n_out - 1, 1}, {0, n_out}}) {
      cuda::DeviceBuffer<__half> part(static_cast<size_t>(width * rows));
      test::poison(part);
      cuda::dequantize_f16_rows(m.m, first, rows, part.get(), nullptr);
      const auto p = test::to_host(part, part.size());
      for (int64_t i = 0; i < width * rows; ++i) {
        ASSERT_EQ(__half2float(p[static_cast<size_t>(i)]), __half2float(got16[static_cast<size_t>(first * width + i)]))
            << tensor_type_name(t) << " rows from " << first << ", element " << i;
      }
    }
    EXPECT_THROW(cuda::dequantize_f16_rows(m.m, n_out - 1, 2, out16.get(), nullptr), Error);
  }
  // Embedding rows of the 512-wide matrix.
  const int64_t n_in = 512, n_out = 7;
  const auto blocks = test::random_blocks(t, n_out * n_in / tensor_type_info(t).block_size);
  auto m = test::upload_matrix(t, n_in, n_out, blocks);
  const auto ref = cpu_dequant(t, blocks, n_in, n_out);

  // Embedding lookup of a few rows (and one invalid id -> zeros).
  const std::vector<int32_t> ids = {3, 0, 6, 3};
  auto d_ids = test::to_device(ids);
  cuda::DeviceBuffer<float> emb(ids.size() * n_in);
  test::poison(emb);
  cuda::embed_rows(m.m, d_ids.get(), static_cast<int>(ids.size()), emb.get(), nullptr);
  const auto e = test::to_host(emb, emb.size());
  for (size_t k = 0; k < ids.size(); ++k)
    for (int64_t c = 0; c < n_in; ++c)
      ASSERT_NEAR(e[k * n_in + c], ref[ids[k] * n_in + c], 1e-6 * std::max(1.0f, std::fabs(ref[ids[k] * n_in + c])));
}

TEST_P(PerType, MatvecMatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  const TensorType t = GetParam();
  // The 8-bit kernels are checked against float64 products with the activations they were given
  // (the 8-bit blocks read back and decoded), so only the kernels' own float rounding remains;
  // the activation rounding itself is covered by the fixture-logit tests.
  const bool q8 = cuda::matvec_uses_q8(t);
  const double tol = 1e-5;
  for (int64_t n_in : {256, 1024, 14336}) {
    const int64_t n_out = 37;
    const int64_t nb = n_out * n_in / tensor_type_info(t).block_size;
    const auto b1 = test::random_blocks(t, nb), b2 = test::random_blocks(t, nb);
    auto m1 = test::upload_matrix(t, n_in, n_out, b1), m2 = test::upload_matrix(t, n_in, n_out, b2);
    const auto w1 = cpu_dequant(t, b1, n_in, n_out), w2 = cpu_dequant(t, b2, n_in, n_out);
    for (int rows : {1, 3, 8, 13, 16}) {
      for (const auto& [mode, gact] : {std::pair{cuda::MatvecMode::Store, GatedAct::Silu},
                                      std::pair{cuda::MatvecMode::Add, GatedAct::Silu},
                                      std::pair{cuda::MatvecMode::Gated, GatedAct::Silu},
                                      std::pair{cuda::MatvecMode::Gated, GatedAct::GeluTanh}}) {
        const auto x = random_floats(static_cast<size_t>(rows * n_in));
        const auto y0 = random_floats(static_cast<size_t>(rows * n_out));
        // 8-bit activation blocks and f32 activations, as rmsnorm_convert produces them.
        auto act = test::device_activations(x, rows, n_in);
        auto& d_x = act.x;
        auto& xq = act.xq;
        auto& xds = act.xds;
        const std::vector<float> xa = q8 ? act.decoded : x;  // the activations the kernel multiplies by
        auto d_y = test::to_device(y0);
        if (mode != cuda::MatvecMode::Add) test::poison(d_y);
        cuda::MatvecArgs a;
        a.w = m1.m;
        a.w2 = m2.m;
        a.mode = mode;
        a.act = gact;
        a.n_rows = rows;
        a.x = d_x.get();
        a.xq = xq.get();
        a.xds = xds.get();
        a.y = d_y.get();
        a.y_stride = n_out;
        cuda::matvec(a, nullptr);
        const auto got = test::to_host(d_y, d_y.size());
        // Float weights: also a block per row (MatvecArgs::float_split); quantized ones: also the
        // rows' (row, block) pairs in one sequence (flat_items); against the same reference.
        auto d_ya = test::to_device(y0);
        if (mode != cuda::MatvecMode::Add) test::poison(d_ya);
        cuda::MatvecArgs alt = a;
        alt.y = d_ya.get();
        alt.float_split = !q8;
        alt.flat_items = q8;
        cuda::matvec(alt, nullptr);
        const auto got_alt = test::to_host(d_ya, d_ya.size());
        std::vector<double> ref(got.size());
        std::vector<float> got_part(got.size());
        double gate_max = 0;  // SiLU(g) turns an error e*|g| in g into a relative error ~ e*|g|
        for (int b = 0; b < rows; ++b) {
          for (int64_t r = 0; r < n_out; ++r) {
            double s1 = 0, s2 = 0;
            for (int64_t i = 0; i < n_in; ++i) {
              s1 += static_cast<double>(w1[r * n_in + i]) * xa[b * n_in + i];
              s2 += static_cast<double>(w2[r * n_in + i]) * xa[b * n_in + i];
            }
            const size_t k = static_cast<size_t>(b * n_out + r);
            if (mode == cuda::MatvecMode::Store) ref[k] = s1;
            if (mode == cuda::MatvecMode::Add) ref[k] = s1;  // compare the product part
            if (mode == cuda::MatvecMode::Gated) {
              // SiLU in float as the kernel evaluates it: a strongly negative gate underflows to 0 in
              // float (random K-quant mins can push every gate there), and a float64 SiLU would then
              // leave a denormal-sized reference that makes the relative error meaningless. GELU
              // (tanh form) in double on the float gate.
              const float g = static_cast<float>(s1);
              gate_max = std::max(gate_max, std::fabs(s1));
              const double gd = g;
              ref[k] = gact == GatedAct::Silu
                           ? static_cast<double>(g / (1.0f + std::exp(-g))) * s2
                           : 0.5 * gd * (1.0 + std::tanh(0.7978845608028654 * (gd + 0.044715 * gd * gd * gd))) * s2;
            }
            got_part[k] = mode == cuda::MatvecMode::Add ? got[k] - y0[k] : got[k];
          }
        }
        std::vector<float> alt_part(got_alt.size());
        for (size_t k = 0; k < got_alt.size(); ++k) {
          alt_part[k] = mode == cuda::MatvecMode::Add ? got_alt[k] - y0[k] : got_alt[k];
        }
        EXPECT_LT(test::rel_err(alt_part, ref), tol * (1.0 + gate_max))
            << tensor_type_name(t) << " n_in " << n_in << " rows " << rows << " mode " << static_cast<int>(mode)
            << " act " << gated_act_name(gact) << (q8 ? " (flat items)" : " (block per row)");
        const double e = test::rel_err(got_part, ref);
        EXPECT_LT(e, tol * (1.0 + gate_max)) << tensor_type_name(t) << " n_in " << n_in << " rows " << rows << " mode "
                          << static_cast<int>(mode) << " act " << gated_act_name(gact) << "; got[0..2] " << got_part[0] << " " << got_part[1] << " "
                          << got_part[2] << ", ref[0..2] " << ref[0] << " " << ref[1] << " " << ref[2];
        if (q8 && mode == cuda::MatvecMode::Store) {
          // The same product as the middle one of three segments in one launch: identical bits.
          cuda::DeviceBuffer<float> ya(got.size()), yb(got.size()), yc(got.size());
          test::poison(ya);
          test::poison(yb);
          test::poison(yc);
          cuda::MatvecArgs f = a;
          f.w = m2.m;
          f.y = ya.get();
          f.extra[0] = {m1.m, yb.get(), n_out};
          f.extra[1] = {m2.m, yc.get(), n_out};
          f.n_extra = 2;
          cuda::matvec(f, nullptr);
          const auto fb = test::to_host(yb, yb.size());
          ASSERT_EQ(0, std::memcmp(fb.data(), got.data(), got.size() * sizeof(float))) << tensor_type_name(t);
          const auto fa = test::to_host(ya, ya.size()), fc = test::to_host(yc, yc.size());
          ASSERT_EQ(0, std::memcmp(fa.data(), fc.data(), fa.size() * sizeof(float))) << tensor_type_name(t);
        }
      }
    }
  }
}

TEST_P(PerType, TensorCoreProductMatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  const TensorType t = GetParam();
  const int64_t n_in = 512, n_out = 48, T = 20;
  const auto blocks = test::random_blocks(t, n_out * n_in / tensor_type_info(t).block_size);
  auto m = test::upload_matrix(t, n_in, n_out, blocks);
  const auto w = cpu_dequant(t, blocks, n_in, n_out);
  const auto x = random_floats(static_cast<size_t>(T * n_in));
  const auto y0 = random_floats(static_cast<size_t>(T * n_out));
  auto d_x = test::to_device(x);
  cuda::DeviceBuffer<__half> xh(x.size()), wh(static_cast<size_t>(n_in * n_out));
  cuda::convert_f32_to_f16(d_x.get(), xh.get(), static_cast<int64_t>(x.size()), nullptr);
  cuda::dequantize_f16(m.m, wh.get(), nullptr);
  auto d_y = test::to_device(y0);
  cuda::CublasHandle h;
  cuda::gemm_f16(h.get(), wh.get(), n_in, n_out, xh.get(), T, d_y.get(), n_out, 1.0f);
  const auto got = test::to_host(d_y, d_y.size());
  std::vector<double> ref(got.size());
  for (int64_t b = 0; b < T; ++b)
    for (int64_t r = 0; r < n_out; ++r) {
      double s = y0[b * n_out + r];
      for (int64_t i = 0; i < n_in; ++i) s += static_cast<double>(w[r * n_in + i]) * x[b * n_in + i];
      ref[b * n_out + r] = s;
    }
  EXPECT_LT(test::rel_err(got, ref), 5e-3) << tensor_type_name(t);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, PerType, ::testing::ValuesIn(test::cuda_types()),
                         [](const ::testing::TestParamInfo<TensorType>& i) { return tensor_type_name(i.param); });

TEST(CudaKernels, RmsnormConvertMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  const int rows = 5, n = 4096;
  const auto x = random_floats(rows * n, -3, 3), w = random_floats(n, 0.5f, 1.5f);
  auto d_x = test::to_device(x), d_w = test::to_device(w);
  cuda::DeviceBuffer<float> y(x.size());
  cuda::DeviceBuffer<int8_t> xq(x.size());
  cuda::DeviceBuffer<float2> xds(x.size() / 32);
  cuda::DeviceBuffer<__half> yh(x.size());
  test::poison(y);
  test::poison(xq);
  test::poison(xds);
  cuda::NormOutArgs a;
  a.x = d_x.get();
  a.x_stride = n;
  a.n_rows = rows;
  a.n = n;
  a.w = d_w.get();
  a.eps = 1e-5f;
  a.y_f32 = y.get();
  a.xq = xq.get();
  a.xds = xds.get();
  a.y_f16 = yh.get();
  cuda::rmsnorm_convert(a, nullptr);
  const auto gy = test::to_host(y, y.size());
  const auto gq = test::to_host(xq, xq.size());
  const auto gd = test::to_host(xds, xds.size());
  std::vector<float> ref(x.size());
  for (int r = 0; r < rows; ++r) rmsnorm(x.data() + r * n, w.data(), n, 1e-5f, ref.data() + r * n);
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(gy[i], ref[i], 1e-5 * std::max(1.0f, std::fabs(ref[i])));
  for (size_t b = 0; b < gd.size(); ++b) {
    double sum = 0;
    for (int j = 0; j < 32; ++j) {
      const float v = ref[b * 32 + j];
      sum += static_cast<double>(gd[b].x) * gq[b * 32 + j];
      ASSERT_NEAR(gd[b].x * gq[b * 32 + j], v, 0.51 * gd[b].x + 1e-6) << "block " << b;
    }
    ASSERT_NEAR(gd[b].y, sum, 1e-4 * (1 + std::fabs(sum)));
  }
}

TEST(CudaKernels, RopeKvStoreMatchesCpu) {
  PIPELLM_REQUIRE_GPU();
  for (bool neox : {false, true}) {
    for (bool extras : {false, true}) {
      const int T = 3, H = 4, Hkv = 2, D = 64, n_ctx = 16, n_slots = 2;
      const auto q = random_floats(T * H * D), k = random_floats(T * Hkv * D), v = random_floats(T * Hkv * D);
      const auto bq = random_floats(H * D), bk = random_floats(Hkv * D), bv = random_floats(Hkv * D);
      const auto qn = random_floats(D, 0.5f, 1.5f), kn = random_floats(D, 0.5f, 1.5f), ff = random_floats(D / 2, 1, 4);
      const std::vector<int32_t> pos = {0, 7, 15}, slot = {1, 0, 1};
      auto dq = test::to_device(q), dk = test::to_device(k), dv = test::to_device(v);
      auto dbq = test::to_device(bq), dbk = test::to_device(bk), dbv = test::to_device(bv);
      auto dqn = test::to_device(qn), dkn = test::to_device(kn), dff = test::to_device(ff);
      auto dpos = test::to_device(pos), dslot = test::to_device(slot);
      cuda::DeviceBuffer<__half> kc(n_slots * n_ctx * Hkv * D), vc(n_slots * n_ctx * Hkv * D);
      test::poison(kc);
      test::poison(vc);
      cuda::RopeKvArgs a = test::dense_rope_args(T, H, Hkv, D, dq.get(), dk.get(), dv.get());
      if (extras) {
        a.bq = dbq.get();
        a.bk = dbk.get();
        a.bv = dbv.get();
        a.q_norm = dqn.get();
        a.k_norm = dkn.get();
        a.freq_factors = dff.get();
      }
      a.norm_eps = 1e-6f;
      a.pos = dpos.get();
      a.slot = dslot.get();
      a.k_cache = kc.get();
      a.v_cache = vc.get();
      a.n_ctx = n_ctx;
      a.n_rot = D;
      a.base = 10000.0f;
      a.neox = neox;
      cuda::rope_kv_store(a, nullptr);
      const auto gq = test::to_host(dq, q.size());
      std::vector<__half> gk(kc.size()), gv(vc.size());
      PIPELLM_CUDA_CHECK(cudaMemcpy(gk.data(), kc.get(), kc.bytes(), cudaMemcpyDeviceToHost));
      PIPELLM_CUDA_CHECK(cudaMemcpy(gv.data(), vc.get(), vc.bytes(), cudaMemcpyDeviceToHost));
      RopeParams rp;
      rp.n_rot = D;
      rp.base = 10000.0f;
      rp.mode = neox ? RopeMode::Neox : RopeMode::Normal;
      rp.freq_factors = extras ? ff.data() : nullptr;
      for (int t = 0; t < T; ++t) {
        std::vector<float> rq(q.begin() + t * H * D, q.begin() + (t + 1) * H * D);
        std::vector<float> rk(k.begin() + t * Hkv * D, k.begin() + (t + 1) * Hkv * D);
        std::vector<float> rv(v.begin() + t * Hkv * D, v.begin() + (t + 1) * Hkv * D);
        if (extras) {
          for (int i = 0; i < H * D; ++i) rq[i] += bq[i];
          for (int i = 0; i < Hkv * D; ++i) {
            rk[i] += bk[i];
            rv[i] += bv[i];
          }
          rmsnorm_rows(rq.data(), qn.data(), H, D, 1e-6f, rq.data());
          rmsnorm_rows(rk.data(), kn.data(), Hkv, D, 1e-6f, rk.data());
        }
        rope(rp, pos[t], rq.data(), H, D);
        rope(rp, pos[t], rk.data(), Hkv, D);
        for (int i = 0; i < H * D; ++i) ASSERT_NEAR(gq[t * H * D + i], rq[i], 1e-4) << "q token " << t << " i " << i;
        const size_t row = (static_cast<size_t>(slot[t]) * n_ctx + pos[t]) * Hkv * D;
        for (int i = 0; i < Hkv * D; ++i) {
          ASSERT_NEAR(__half2float(gk[row + i]), rk[i], 2e-3 * std::max(1.0f, std::fabs(rk[i]))) << "k " << t;
          ASSERT_NEAR(__half2float(gv[row + i]), rv[i], 2e-3 * std::max(1.0f, std::fabs(rv[i]))) << "v " << t;
        }
      }
    }
  }
}

TEST(CudaKernels, AttentionMatchesFloat64) {
  PIPELLM_REQUIRE_GPU();
  for (int D : {64, 96, 128, 256, 512}) {
    for (int G : {1, 4}) {
      for (int splits_target : {1, 64})
      for (const bool tc : {false, true}) {  // the CUDA-core kernel; the tensor-core one where it applies
        const int Hkv = 2, H = Hkv * G, n_ctx = 300, n_slots = 2;
        const std::vector<int32_t> pos = {0, 299, 130, 64, -1}, slot = {0, 1, 0, 1, 0};
        const int T = static_cast<int>(pos.size());
        const auto q = random_floats(T * H * D);
        std::vector<__half> kc(n_slots * n_ctx * Hkv * D), vc(kc.size());
        for (auto& e : kc) e = __float2half(test::uniform(-1, 1));
        for (auto& e : vc) e = __float2half(test::uniform(-1, 1));
        auto dq = test::to_device(q);
        auto dpos = test::to_device(pos), dslot = test::to_device(slot);
        auto dk = test::to_device(kc), dv = test::to_device(vc);
        cuda::DeviceBuffer<float> out(T * H * D);
        test::poison(out);
        cuda::AttentionArgs a = test::dense_attention_args(T, H, Hkv, D, dq.get(), out.get(), dk.get(),
                                                           dv.get(), n_ctx, dpos.get(), dslot.get());
        a.tensor_cores = tc;
        if (tc && !cuda::attention_mma_supports(a)) continue;
        cuda::attention_split(n_ctx, T, Hkv, splits_target, &a.n_splits, &a.keys_per_split);
        cuda::DeviceBuffer<float> part(static_cast<size_t>(cuda::attention_scratch_floats(T, H, D, a.n_splits)));
        a.partial = part.get();
        cuda::DeviceBuffer<int8_t> xq(out.size()), xq_ref(out.size());
        cuda::DeviceBuffer<float2> xds(out.size() / 32), xds_ref(out.size() / 32);
        test::poison(xq);
        test::poison(xds);
        a.xq = xq.get();
        a.xds = xds.get();
        cuda::attention(a, nullptr);
        const auto got = test::to_host(out, out.size());
        // The fused 8-bit output equals rmsnorm_convert(normalize = false) of the output, bit for bit.
        cuda::NormOutArgs na;
        na.x = out.get();
        na.x_stride = H * D;
        na.n_rows = T;
        na.n = H * D;
        na.normalize = false;
        na.xq = xq_ref.get();
        na.xds = xds_ref.get();
        cuda::rmsnorm_convert(na, nullptr);
        const auto q1 = test::to_host(xq, xq.size()), q2 = test::to_host(xq_ref, xq_ref.size());
        const auto s1 = test::to_host(xds, xds.size()), s2 = test::to_host(xds_ref, xds_ref.size());
        ASSERT_EQ(0, std::memcmp(q1.data(), q2.data(), q1.size())) << "D " << D << " G " << G;
        ASSERT_EQ(0, std::memcmp(s1.data(), s2.data(), s1.size() * sizeof(float2))) << "D " << D << " G " << G;
        std::vector<double> ref(got.size(), 0.0);
        for (int t = 0; t < T; ++t) {
          if (pos[t] < 0) continue;
          for (int h = 0; h < H; ++h) {
            const int g = h / G;
            std::vector<double> s(pos[t] + 1);
            double mx = -1e300;
            for (int j = 0; j <= pos[t]; ++j) {
              double d = 0;
              for (int e = 0; e < D; ++e)
                d += static_cast<double>(q[(t * H + h) * D + e]) *
                     __half2float(kc[((slot[t] * n_ctx + j) * Hkv + g) * D + e]);
              s[j] = d / std::sqrt(static_cast<double>(D));
              mx = std::max(mx, s[j]);
            }
            double den = 0;
            for (auto& v : s) den += (v = std::exp(v - mx));
            for (int e = 0; e < D; ++e) {
              double o = 0;
              for (int j = 0; j <= pos[t]; ++j) o += s[j] * __half2float(vc[((slot[t] * n_ctx + j) * Hkv + g) * D + e]);
              ref[(t * H + h) * D + e] = o / den;
            }
          }
        }
        EXPECT_LT(test::rel_err(got, ref), tc ? test::kTensorCoreAttentionRms : 1e-4)
            << "D " << D << " G " << G << " splits " << a.n_splits << " tensor cores " << tc;
        if (tc) {  // the same launch again: the same bits (the warps merge in a fixed order)
          cuda::attention(a, nullptr);
          EXPECT_EQ(test::to_host(out, out.size()), got) << "D " << D << " G " << G << ": not bit-stable";
        }
        for (int i = 0; i < H * D; ++i) ASSERT_EQ(got[(T - 1) * H * D + i], 0.0f) << "padding token";
      }
    }
  }
}

// The split choice (host code: runs without a GPU). Hand-computed cases, then the invariants
// the kernel relies on: splits aligned to 64 keys, covering every key, none empty at the end.
TEST(CudaKernels, AttentionSplitsCoverTheKeys) {
  int s = 0, kps = 0;
  cuda::attention_split(4096, 1, 8, 264, &s, &kps);  // 33 per token -> 125 keys -> 128: 32 splits
  EXPECT_EQ(s, 32);
  EXPECT_EQ(kps, 128);
  cuda::attention_split(4096, 512, 8, 264, &s, &kps);  // a prefill chunk: one split per token
  EXPECT_EQ(s, 1);
  EXPECT_EQ(kps, 4096);
  cuda::attention_split(100, 1, 2, 264, &s, &kps);  // short: splits of 64
  EXPECT_EQ(s, 2);
  EXPECT_EQ(kps, 64);
  for (const int n : {1, 63, 64, 65, 300, 4096, 32768, 131072}) {
    for (const int T : {1, 3, 16, 64, 512}) {
      for (const int kv : {1, 2, 8}) {
        for (const int target : {264, 528}) {
          cuda::attention_split(n, T, kv, target, &s, &kps);
          const std::string at = std::to_string(n) + " keys, " + std::to_string(T) + " tokens, " +
                                 std::to_string(kv) + " kv heads, target " + std::to_string(target);
          EXPECT_GE(s, 1) << at;
          EXPECT_EQ(kps % 64, 0) << at;
          EXPECT_GE(static_cast<int64_t>(s) * kps, n) << at;
          EXPECT_LT(static_cast<int64_t>(s - 1) * kps, n) << at;
          EXPECT_LE(s, std::max(1, target / (T * kv))) << at;
        }
      }
    }
  }
}

TEST(CudaKernels, AttentionRefusesHeadSizesWithoutAKernel) {
  cuda::AttentionArgs a;
  a.n_tokens = 1;
  a.n_head = 4;
  a.n_head_kv = 4;
  for (const int d : {80, 160, 1024}) {
    a.head_dim = d;
    EXPECT_THROW(cuda::attention(a, nullptr), Error) << d;
  }
}

// Tokens per tensor-core block for a prompt chunk (host code: runs without a GPU): 16 query rows
// hold 16 / G tokens' heads; one token where the tensor-core kernel does not apply (CUDA cores,
// a quantized cache, a head size without a kernel) or the keys are split. Asking for more is
// refused before any launch.
TEST(CudaKernels, AttentionTokensPerBlockFollowTheGroup) {
  cuda::AttentionArgs a;
  a.n_tokens = 40;
  a.n_head_kv = 2;
  a.head_dim = 128;
  a.tensor_cores = true;
  a.n_splits = 1;
  for (const int G : {1, 2, 3, 4, 8, 16}) {
    a.n_head = a.n_head_kv * G;
    EXPECT_EQ(cuda::attention_tokens_per_block(a), 16 / G) << "G " << G;
  }
  a.n_head = 8;  // G 4
  a.head_dim = 256;
  EXPECT_EQ(cuda::attention_tokens_per_block(a), 4);
  const auto one = [&](auto change) {
    cuda::AttentionArgs b = a;
    change(b);
    return cuda::attention_tokens_per_block(b);
  };
  EXPECT_EQ(one([](cuda::AttentionArgs& b) { b.n_splits = 2; }), 1);
  EXPECT_EQ(one([](cuda::AttentionArgs& b) { b.tensor_cores = false; }), 1);
  EXPECT_EQ(one([](cuda::AttentionArgs& b) { b.k_type = TensorType::Q8_0; }), 1);
  EXPECT_EQ(one([](cuda::AttentionArgs& b) { b.head_dim = 512; }), 1);
  a.tokens_per_block = 5;  // 20 rows
  EXPECT_THROW(cuda::attention(a, nullptr), Error);
  a.tokens_per_block = 0;
  EXPECT_THROW(cuda::attention(a, nullptr), Error);
}

}  // namespace
}  // namespace pipellm

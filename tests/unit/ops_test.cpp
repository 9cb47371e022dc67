// CPU ops (kernels/cpu: rmsnorm, rope, attention, swiglu, matmul) against float64 references
// written here, plus a few hand-computed values. The CUDA kernels are tested against these ops.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quantize_activations.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "tests/unit/matmul_test_util.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

using test::random_vec;

// matmul of the 2-D tensor `w` with T rows of x on nth threads.
std::vector<float> run_matmul(const TensorView& w, const std::vector<float>& x, int64_t T, int act_parts, int nth) {
  return test::run_matmul(w.type, w.data, w.row_bytes(), w.ne[1], w.ne[0], x, T, act_parts, nth);
}

// max |a - ref| / max |ref|
double max_rel(const std::vector<float>& a, const std::vector<double>& ref) {
  double err = 0.0, mag = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, std::abs(a[i] - ref[i]));
    mag = std::max(mag, std::abs(ref[i]));
  }
  return err / mag;
}

TEST(Rmsnorm, MatchesFloat64) {
  const int64_t n = 300;
  const auto x = random_vec(n, 1, 3.0f), w = random_vec(n, 2);
  double ss = 0.0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double s = 1.0 / std::sqrt(ss / n + 1e-5);
  std::vector<double> ref(n);
  for (int64_t i = 0; i < n; ++i) ref[static_cast<size_t>(i)] = x[static_cast<size_t>(i)] * s * w[static_cast<size_t>(i)];
  std::vector<float> y(n);
  rmsnorm(x.data(), w.data(), n, 1e-5f, y.data());
  EXPECT_LT(max_rel(y, ref), 1e-6);
}

TEST(Rmsnorm, HandComputed) {
  // x = (3, 4): mean square 12.5, eps 0 -> scale 1/sqrt(12.5).
  const float x[2] = {3.0f, 4.0f};
  float y[2];
  rmsnorm(x, nullptr, 2, 0.0f, y);
  EXPECT_NEAR(y[0], 3.0 / std::sqrt(12.5), 1e-7);
  EXPECT_NEAR(y[1], 4.0 / std::sqrt(12.5), 1e-7);
  const float rows[4] = {1.0f, 1.0f, -2.0f, 2.0f}, w[2] = {2.0f, 0.5f};
  float out[4];
  rmsnorm_rows(rows, w, 2, 2, 0.0f, out);
  EXPECT_NEAR(out[0], 2.0, 1e-7);
  EXPECT_NEAR(out[1], 0.5, 1e-7);
  EXPECT_NEAR(out[2], -2.0, 1e-7);
  EXPECT_NEAR(out[3], 0.5, 1e-7);
}

TEST(Swiglu, MatchesFloat64) {
  const auto g = random_vec(257, 3, 4.0f), u = random_vec(257, 4);
  std::vector<double> ref(g.size());
  for (size_t i = 0; i < g.size(); ++i) ref[i] = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
  std::vector<float> out(g.size());
  swiglu(g.data(), u.data(), static_cast<int64_t>(g.size()), out.data());
  EXPECT_LT(max_rel(out, ref), 1e-6);
  float one = 0.0f;
  const float gz = 0.0f, uz = 5.0f;
  swiglu(&gz, &uz, 1, &one);
  EXPECT_EQ(one, 0.0f);  // silu(0) = 0
}

// float64 rope of one head: pairs per mode.
std::vector<double> rope_ref(const std::vector<float>& x, int n_heads, int hd, const RopeParams& p, int64_t pos) {
  std::vector<double> y(x.begin(), x.end());
  const int half = p.n_rot / 2;
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < half; ++i) {
      double theta = static_cast<double>(pos) * p.freq_scale * std::pow(static_cast<double>(p.base), -2.0 * i / p.n_rot);
      if (p.freq_factors) theta /= p.freq_factors[i];
      const int a = h * hd + (p.mode == RopeMode::Normal ? 2 * i : i);
      const int b = h * hd + (p.mode == RopeMode::Normal ? 2 * i + 1 : i + half);
      const double xa = x[static_cast<size_t>(a)], xb = x[static_cast<size_t>(b)];
      y[static_cast<size_t>(a)] = xa * std::cos(theta) - xb * std::sin(theta);
      y[static_cast<size_t>(b)] = xa * std::sin(theta) + xb * std::cos(theta);
    }
  }
  return y;
}

TEST(Rope, NormalAndNeoxMatchFloat64) {
  const int hd = 64, nh = 3;
  const auto factors = random_vec(16, 9);
  std::vector<float> pos_factors(16);
  for (size_t i = 0; i < 16; ++i) pos_factors[i] = 1.0f + std::abs(factors[i]);
  for (RopeMode mode : {RopeMode::Normal, RopeMode::Neox}) {
    for (int n_rot : {64, 32}) {
      for (int64_t pos : {int64_t{0}, int64_t{1}, int64_t{37}, int64_t{5000}}) {
        RopeParams p;
        p.n_rot = n_rot;
        p.base = 500000.0f;
        p.mode = mode;
        if (n_rot == 32) {
          p.freq_factors = pos_factors.data();
          p.freq_scale = 0.25f;
        }
        auto x = random_vec(static_cast<size_t>(hd * nh), 5 + static_cast<uint64_t>(pos));
        const auto ref = rope_ref(x, nh, hd, p, pos);
        rope(p, pos, x.data(), nh, hd);
        EXPECT_LT(max_rel(x, ref), 2e-6) << "mode " << static_cast<int>(mode) << " n_rot " << n_rot << " pos " << pos;
      }
    }
  }
}

TEST(Rope, HandComputedPairs) {
  // head_dim 4, n_rot 4, base 100, pos 1: theta_0 = 1, theta_1 = 100^(-1/2) = 0.1.
  RopeParams p;
  p.n_rot = 4;
  p.base = 100.0f;
  const float in[4] = {1.0f, 0.0f, 0.0f, 1.0f};
  float x[4];
  std::copy(in, in + 4, x);
  rope(p, 1, x, 1, 4);  // normal: pairs (0,1) and (2,3)
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[2], -std::sin(0.1), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.1), 1e-6);
  std::copy(in, in + 4, x);
  p.mode = RopeMode::Neox;  // pairs (0,2) and (1,3)
  rope(p, 1, x, 1, 4);
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[2], std::sin(1.0), 1e-6);
  EXPECT_NEAR(x[1], -std::sin(0.1), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.1), 1e-6);
}

// Attention over a cache of n_ctx rows for 3 tokens of 2 sequences, GQA 4 query heads / 2 kv heads.
class AttentionOp : public ::testing::TestWithParam<TensorType> {};

TEST_P(AttentionOp, MatchesFloat64) {
  const TensorType kv = GetParam();
  const int n_head = 4, n_head_kv = 2, hd = 32, n_ctx = 20, T = 3;
  const int kd = n_head_kv * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const auto q = random_vec(static_cast<size_t>(T * n_head * hd), 11);
  // Two sequences' caches, values as stored (rounded to f16 when the cache is f16).
  std::vector<float> kf = random_vec(static_cast<size_t>(2 * n_ctx * kd), 12, 2.0f);
  std::vector<float> vf = random_vec(static_cast<size_t>(2 * n_ctx * kd), 13);
  const size_t elem = kv == TensorType::F16 ? 2 : 4;
  std::vector<uint8_t> kc(kf.size() * elem), vc(vf.size() * elem);
  for (size_t i = 0; i < kf.size(); ++i) {
    if (kv == TensorType::F16) {
      const uint16_t hk = f32_to_fp16(kf[i]), hv = f32_to_fp16(vf[i]);
      std::memcpy(kc.data() + 2 * i, &hk, 2);
      std::memcpy(vc.data() + 2 * i, &hv, 2);
      kf[i] = fp16_to_f32(hk);
      vf[i] = fp16_to_f32(hv);
    } else {
      std::memcpy(kc.data() + 4 * i, &kf[i], 4);
      std::memcpy(vc.data() + 4 * i, &vf[i], 4);
    }
  }
  const int32_t n_kv[T] = {20, 1, 7};
  const int seq[T] = {0, 1, 1};
  const size_t row_bytes = static_cast<size_t>(kd) * elem;
  const uint8_t* kp[T];
  const uint8_t* vp[T];
  for (int t = 0; t < T; ++t) {
    kp[t] = kc.data() + static_cast<size_t>(seq[t] * n_ctx) * row_bytes;
    vp[t] = vc.data() + static_cast<size_t>(seq[t] * n_ctx) * row_bytes;
  }

  std::vector<double> ref(static_cast<size_t>(T * n_head * hd), 0.0);
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < n_head; ++h) {
      const int g = h / (n_head / n_head_kv);
      std::vector<double> s(static_cast<size_t>(n_kv[t]));
      double mx = -1e300;
      for (int j = 0; j < n_kv[t]; ++j) {
        double d = 0.0;
        for (int i = 0; i < hd; ++i) {
          d += static_cast<double>(q[static_cast<size_t>((t * n_head + h) * hd + i)]) *
               kf[static_cast<size_t>((seq[t] * n_ctx + j) * kd + g * hd + i)];
        }
        s[static_cast<size_t>(j)] = d * scale;
        mx = std::max(mx, d * scale);
      }
      double sum = 0.0;
      for (auto& e : s) sum += (e = std::exp(e - mx));
      for (int j = 0; j < n_kv[t]; ++j) {
        for (int i = 0; i < hd; ++i) {
          ref[static_cast<size_t>((t * n_head + h) * hd + i)] +=
              s[static_cast<size_t>(j)] / sum * vf[static_cast<size_t>((seq[t] * n_ctx + j) * kd + g * hd + i)];
        }
      }
    }
  }

  for (int nth : {1, 3}) {
    std::vector<float> out(ref.size(), -7.0f);
    AttentionArgs a;
    a.n_tokens = T;
    a.n_head = n_head;
    a.n_head_kv = n_head_kv;
    a.head_dim = hd;
    a.head_dim_v = hd;
    a.scale = scale;
    a.q = q.data();
    a.q_stride = n_head * hd;
    a.out = out.data();
    a.out_stride = n_head * hd;
    a.n_kv = n_kv;
    a.k = kp;
    a.v = vp;
    a.k_row_bytes = row_bytes;
    a.v_row_bytes = row_bytes;
    a.kv_type = kv;
    for (int ith = 0; ith < nth; ++ith) attention(a, ith, nth);
    EXPECT_LT(max_rel(out, ref), 1e-5) << "threads " << nth;
    // One cache row: the output is that row's V exactly.
    for (int i = 0; i < hd; ++i) EXPECT_FLOAT_EQ(out[static_cast<size_t>(n_head * hd + i)], vf[static_cast<size_t>(n_ctx * kd + i)]);
  }
}

INSTANTIATE_TEST_SUITE_P(KvTypes, AttentionOp, ::testing::Values(TensorType::F16, TensorType::F32));

// matmul on real quantized tensors of the fixtures against float64 products of the dequantized rows.
struct MatmulCase {
  const char* model;
  const char* tensor;
};

class MatmulOp : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulOp, MatchesFloat64) {
  auto f = GgufFile::open(test::model_path(GetParam().model));
  const TensorView& w = f->tensor(GetParam().tensor);
  const int64_t n = w.ne[0], rows = w.ne[1];
  std::vector<float> deq(static_cast<size_t>(n * rows));
  for (int64_t r = 0; r < rows; ++r) dequantize_row(w.type, w.row(r), deq.data() + r * n, n);
  for (int64_t T : {int64_t{1}, int64_t{5}, int64_t{17}}) {
    const auto x = random_vec(static_cast<size_t>(T * n), 21);
    // Where matmul rounds the activations to 8-bit parts, the reference takes the same rounded
    // values (the rounding itself is tested in vec_dot_q8_test).
    std::vector<double> xr(x.begin(), x.end());
    const ActQuant aq = act_quant_for(w.type);
    if (aq != ActQuant::None) {
      const size_t pb = act_quant_bytes(aq, n);
      std::vector<uint8_t> parts(3 * pb);
      for (int64_t t = 0; t < T; ++t) {
        quantize_activations_split(aq, x.data() + t * n, n, 3, parts.data());
        for (int64_t i = 0; i < n; ++i) {
          double v = 0;
          for (int p = 0; p < 3; ++p) v += act_quant_value(aq, parts.data() + p * pb, i);
          xr[static_cast<size_t>(t * n + i)] = v;
        }
      }
    }
    std::vector<double> ref(static_cast<size_t>(T * rows));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          s += static_cast<double>(deq[static_cast<size_t>(r * n + i)]) * xr[static_cast<size_t>(t * n + i)];
        }
        ref[static_cast<size_t>(t * rows + r)] = s;
      }
    }
    for (int nth : {1, 3}) {
      const std::vector<float> y = run_matmul(w, x, T, 3, nth);
      EXPECT_LT(max_rel(y, ref), 1e-5) << GetParam().model << " " << w.name << " (" << tensor_type_name(w.type)
                                       << ") tokens " << T << " threads " << nth;
    }
  }
}

// One 8-bit part (MatmulArgs::act_parts = 1, llama.cpp's rounding; the host experts' products):
// the reference multiplies the same once-rounded activations, so only float rounding separates
// them. Few tokens: many take the float tiles on x whatever act_parts says (matmul.h).
TEST_P(MatmulOp, OneActivationPartMatchesFloat64OnTheRoundedActivations) {
  auto f = GgufFile::open(test::model_path(GetParam().model));
  const TensorView& w = f->tensor(GetParam().tensor);
  const ActQuant aq = act_quant_for(w.type);
  if (aq == ActQuant::None) GTEST_SKIP() << tensor_type_name(w.type) << " products take float activations";
  const int64_t n = w.ne[0], rows = w.ne[1], T = 2;
  std::vector<float> deq(static_cast<size_t>(n * rows));
  for (int64_t r = 0; r < rows; ++r) dequantize_row(w.type, w.row(r), deq.data() + r * n, n);
  const auto x = random_vec(static_cast<size_t>(T * n), 22);
  std::vector<float> xr(x.size());
  for (int64_t t = 0; t < T; ++t) round_activations(aq, x.data() + t * n, n, 1, xr.data() + t * n);
  std::vector<double> ref(static_cast<size_t>(T * rows));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0.0;
      for (int64_t i = 0; i < n; ++i) s += static_cast<double>(deq[static_cast<size_t>(r * n + i)]) * xr[static_cast<size_t>(t * n + i)];
      ref[static_cast<size_t>(t * rows + r)] = s;
    }
  }
  EXPECT_LT(max_rel(run_matmul(w, x, T, 1, 2), ref), 1e-5) << w.name << " (" << tensor_type_name(w.type) << ")";
}

INSTANTIATE_TEST_SUITE_P(Tensors, MatmulOp,
                         ::testing::Values(MatmulCase{"tiny-llama-Q4_K_M", "blk.0.attn_q.weight"},
                                           MatmulCase{"tiny-llama-Q4_K_M", "blk.0.ffn_down.weight"},
                                           MatmulCase{"tiny-llama-Q4_K_M", "output.weight"},
                                           MatmulCase{"tiny-llama-Q5_1", "blk.1.ffn_up.weight"},
                                           MatmulCase{"tiny-llama-IQ4_XS", "blk.0.attn_v.weight"},
                                           MatmulCase{"tiny-llama-BF16", "blk.0.attn_k.weight"},
                                           MatmulCase{"tiny-llama-F32", "blk.0.ffn_gate.weight"}));

}  // namespace
}  // namespace pipellm

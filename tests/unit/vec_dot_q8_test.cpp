// The 8-bit activation path: the rounding (quantize_activations) and the integer dot products
// (vec_dot_q8, scalar and AVX2) against float64 references of the dequantized weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quantize_activations.h"
#include "kernels/cpu/quantize_activations_avx2.h"
#include "kernels/cpu/vec_dot_q8.h"
#include "tests/unit/vec_dot_test_util.h"

namespace pipellm {
namespace {

const TensorType kQ8Types[] = {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0,  TensorType::IQ4_NL,
                               TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K, TensorType::IQ4_XS};

std::vector<float> gaussian(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> gauss(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = gauss(rng);
  return x;
}

std::vector<uint8_t> quantized(ActQuant q, const std::vector<float>& x) {
  std::vector<uint8_t> xq(act_quant_bytes(q, static_cast<int64_t>(x.size())));
  quantize_activations(q, x.data(), static_cast<int64_t>(x.size()), xq.data());
  return xq;
}

float block_scale(ActQuant q, const std::vector<uint8_t>& xq, int64_t i) {
  return q == ActQuant::Q8x32 ? reinterpret_cast<const ActQ8Block32*>(xq.data())[i / 32].d
                              : reinterpret_cast<const ActQ8Block256*>(xq.data())[i / 256].d;
}

class ActRounding : public testing::TestWithParam<ActQuant> {};

TEST_P(ActRounding, WithinHalfAStepAndSumsExact) {
  const ActQuant q = GetParam();
  std::mt19937 rng(7);
  const int64_t n = 1024;
  auto x = gaussian(n, rng, 3.0f);
  for (int64_t i = 256; i < 512; ++i) x[static_cast<size_t>(i)] = 0.0f;  // an all-zero block
  x[600] = 1e-30f;                                                       // a tiny one
  const auto xq = quantized(q, x);
  const int64_t bs = act_quant_block_size(q);
  for (int64_t i = 0; i < n; ++i) {
    double amax = 0;
    for (int64_t j = i / bs * bs; j < (i / bs + 1) * bs; ++j) amax = std::max(amax, std::fabs(double{x[static_cast<size_t>(j)]}));
    // Half a step, plus what the stored scale's own rounding (fp16 for 32-blocks) moves the largest q.
    const double d = std::fabs(block_scale(q, xq, i));
    const double bound = amax / 254 * (1 + 1e-6) + 127 * std::fabs(d - amax / 127);
    EXPECT_LE(std::fabs(x[static_cast<size_t>(i)] - act_quant_value(q, xq.data(), i)), bound) << "element " << i;
    EXPECT_LE(bound, 0.57 * d + 1e-30) << "element " << i;  // the scale's rounding is small
  }
  if (q == ActQuant::Q8x32) {
    const auto* b = reinterpret_cast<const ActQ8Block32*>(xq.data());
    for (int64_t k = 0; k < n / 32; ++k) {
      int s = 0;
      for (int8_t v : b[k].qs) s += v;
      EXPECT_EQ(b[k].sum, s);
    }
  } else {
    const auto* b = reinterpret_cast<const ActQ8Block256*>(xq.data());
    for (int64_t k = 0; k < n / 256; ++k)
      for (int j = 0; j < 16; ++j) {
        int s = 0;
        for (int l = 0; l < 16; ++l) s += b[k].qs[16 * j + l];
        EXPECT_EQ(b[k].bsums[j], s);
      }
  }
  EXPECT_EQ(block_scale(q, xq, 300), 0.0f);
  EXPECT_EQ(act_quant_value(q, xq.data(), 300), 0.0f);
}

TEST_P(ActRounding, NonFiniteBlockGivesNaNScale) {
  const ActQuant q = GetParam();
  std::vector<float> x(768, 1.0f);
  x[3] = std::nanf("");
  x[300] = INFINITY;
  const auto xq = quantized(q, x);
  EXPECT_TRUE(std::isnan(block_scale(q, xq, 3)));
  EXPECT_TRUE(std::isnan(block_scale(q, xq, 300)));
  EXPECT_NEAR(std::fabs(block_scale(q, xq, 700)), 1.0 / 127, 1e-5);  // a block without them is untouched
}

// Each part rounds what the previous ones left: the error shrinks by about 254 per part, and
// three parts carry x to float precision.
TEST_P(ActRounding, SplitShrinksTheErrorPartByPart) {
  const ActQuant q = GetParam();
  std::mt19937 rng(5);
  const int64_t n = 2048, bs = act_quant_block_size(q);
  const auto x = gaussian(n, rng, 2.0f);
  const size_t pb = act_quant_bytes(q, n);
  std::vector<uint8_t> parts(3 * pb);
  quantize_activations_split(q, x.data(), n, 3, parts.data());
  EXPECT_TRUE(std::equal(parts.begin(), parts.begin() + static_cast<long>(pb), quantized(q, x).begin()));
  std::vector<float> rounded(static_cast<size_t>(n));
  round_activations(q, x.data(), n, 3, rounded.data());
  for (int64_t i = 0; i < n; ++i) {
    double amax = 0;
    for (int64_t j = i / bs * bs; j < (i / bs + 1) * bs; ++j) amax = std::max(amax, std::fabs(double{x[static_cast<size_t>(j)]}));
    double sum = 0;
    for (int p = 0; p < 3; ++p) {
      sum += act_quant_value(q, parts.data() + p * pb, i);
      // After p+1 parts: half a step of part p, which is at most 1/254^p of the first step.
      const double step = std::fabs(block_scale(q, std::vector<uint8_t>(parts.begin() + static_cast<long>(p * pb), parts.end()), i));
      EXPECT_LE(std::fabs(x[static_cast<size_t>(i)] - sum), 0.5 * step + 1e-7 * amax) << "element " << i << " part " << p;
      EXPECT_LE(step, amax / 127 / std::pow(127.0 / 0.5 * (1 - 1e-3), p) * (1 + 1e-6)) << "element " << i << " part " << p;
    }
    EXPECT_LE(std::fabs(x[static_cast<size_t>(i)] - sum), 2e-7 * amax) << "element " << i;
    EXPECT_NEAR(rounded[static_cast<size_t>(i)], sum, 1e-7 * amax) << "element " << i;
  }
}

// The AVX2 rounding helpers give the bits of the portable definition: max |x|, and
// round-to-nearest-even of x * mul (ties included), saturated to int8.
TEST(ActRoundingAvx2, MatchesPortableDefinition) {
  if (!vec_dot_isa_available(VecDotIsa::Avx2)) GTEST_SKIP() << "CPU without AVX2+FMA+F16C";
  std::mt19937 rng(9);
  auto x = gaussian(256, rng, 3.0f);
  for (int i = 0; i < 8; ++i) x[static_cast<size_t>(i)] = 0.5f * static_cast<float>(i) - 1.75f;  // ties at mul 2
  x[100] = -9.0f;
  float amax = 0;
  ASSERT_TRUE(detail::absmax_avx2(x.data(), 256, &amax));
  double want = 0;
  for (float v : x) want = std::max(want, std::fabs(double{v}));
  EXPECT_EQ(amax, want);
  for (float mul : {2.0f, 127.0f / 9.0f, 100.0f}) {
    std::vector<int8_t> q(256);
    detail::round_scaled_avx2(x.data(), 256, mul, q.data());
    for (size_t i = 0; i < x.size(); ++i) {
      const float v = std::nearbyint(x[i] * mul);  // default mode: nearest, ties to even
      EXPECT_EQ(q[i], static_cast<int8_t>(std::clamp(v, -128.0f, 127.0f))) << "mul " << mul << " element " << i;
    }
  }
  std::vector<int8_t> q(256);
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<int8_t>(static_cast<int>(i) - 128);
  for (bool add : {false, true}) {
    std::vector<float> r = x;
    detail::add_scaled_avx2(q.data(), 0.0137f, 256, add, r.data());
    for (size_t i = 0; i < r.size(); ++i) {
      const float v = 0.0137f * static_cast<float>(q[i]);
      EXPECT_EQ(r[i], add ? x[i] + v : x[i] - v) << "element " << i;
    }
  }
  x[7] = std::nanf("");
  EXPECT_FALSE(detail::absmax_avx2(x.data(), 256, &amax));
  x[7] = -INFINITY;
  EXPECT_FALSE(detail::absmax_avx2(x.data(), 256, &amax));
}

INSTANTIATE_TEST_SUITE_P(Formats, ActRounding, testing::Values(ActQuant::Q8x32, ActQuant::Q8x256),
                         [](const testing::TestParamInfo<ActQuant>& i) {
                           return std::string(i.param == ActQuant::Q8x32 ? "Q8x32" : "Q8x256");
                         });

struct Sums {
  double dot_xq;      // float64 dot of the dequantized row with the rounded activations
  double abs_dot_xq;  // sum |w_i xq_i|: what float rounding errors are relative to
  double dot_x;       // float64 dot with the float activations
  double abs_dot_x;
  double rounding;    // sum |w_i| * 0.57 |d_i|: the most the activation rounding can move the dot
};

Sums reference(TensorType t, const std::vector<uint8_t>& row, const std::vector<float>& x,
               const std::vector<uint8_t>& xq) {
  const ActQuant q = act_quant_for(t);
  const auto n = static_cast<int64_t>(x.size());
  std::vector<float> w(x.size());
  dequantize_row(t, row.data(), w.data(), n);
  Sums s{0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const double wi = w[static_cast<size_t>(i)], xi = x[static_cast<size_t>(i)];
    const double xqi = act_quant_value(q, xq.data(), i);
    s.dot_xq += wi * xqi;
    s.abs_dot_xq += std::fabs(wi * xqi);
    s.dot_x += wi * xi;
    s.abs_dot_x += std::fabs(wi * xi);
    s.rounding += std::fabs(wi) * 0.57 * std::fabs(block_scale(q, xq, i));  // see ActRounding
  }
  return s;
}

class VecDotQ8 : public testing::TestWithParam<TensorType> {};

void check_kernel(TensorType t, VecDotQ8Fn f, const char* isa) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  const ActQuant q = act_quant_for(t);
  ASSERT_NE(q, ActQuant::None);
  for (int64_t n : {256, 1024, 4096, 11008 / 256 * 256}) {
    for (int rep = 0; rep < 4; ++rep) {
      const auto row = test::random_row(t, n, rng);
      const auto x = gaussian(n, rng, rep % 2 ? 1.0f : 30.0f);
      const auto xq = quantized(q, x);
      const Sums ref = reference(t, row, x, xq);
      const double got = f(row.data(), xq.data(), n);
      const std::string where = std::string(tensor_type_name(t)) + " " + isa + " n=" + std::to_string(n) +
                                " seed=" + std::to_string(seed);
      // Exact integer sums: only float rounding of the scales and of the block totals is left.
      EXPECT_LE(std::fabs(got - ref.dot_xq), 1e-5 * ref.abs_dot_xq + 1e-30) << where << " vs rounded x";
      // Against the float activations, the rounding bound (plus float rounding).
      EXPECT_LE(std::fabs(got - ref.dot_x), ref.rounding * (1 + 1e-5) + 1e-5 * ref.abs_dot_x) << where << " vs x";
    }
  }
}

TEST_P(VecDotQ8, ScalarMatchesFloat64Reference) {
  const VecDotQ8Fn f = vec_dot_q8_kernel(GetParam(), VecDotIsa::Scalar);
  ASSERT_NE(f, nullptr);
  check_kernel(GetParam(), f, "scalar");
}

TEST_P(VecDotQ8, Avx2MatchesFloat64Reference) {
  if (!vec_dot_isa_available(VecDotIsa::Avx2)) GTEST_SKIP() << "CPU without AVX2+FMA+F16C";
  const VecDotQ8Fn f = vec_dot_q8_kernel(GetParam(), VecDotIsa::Avx2);
  ASSERT_NE(f, nullptr);
  check_kernel(GetParam(), f, "avx2");
}

// Several activation vectors in one pass over the row give, each, the one-vector kernel's bits.
TEST_P(VecDotQ8, SeveralVectorsEqualOneAtATime) {
  const TensorType t = GetParam();
  const ActQuant q = act_quant_for(t);
  std::mt19937 rng(17);
  const int64_t n = 1024;
  const auto row = test::random_row(t, n, rng);
  const size_t xb = act_quant_bytes(q, n);
  std::vector<uint8_t> xq;
  for (int v = 0; v < 7; ++v) {
    const auto part = quantized(q, gaussian(n, rng));
    xq.insert(xq.end(), part.begin(), part.end());
  }
  for (VecDotIsa isa : {VecDotIsa::Scalar, VecDotIsa::Avx2}) {
    const VecDotQ8Kernels k = vec_dot_q8_kernels(t, isa);
    if (k.one == nullptr) continue;
    for (int nt = 1; nt <= 7; ++nt) {
      std::vector<float> out(static_cast<size_t>(nt));
      k.tokens(row.data(), xq.data(), xb, nt, n, out.data());
      for (int v = 0; v < nt; ++v) {
        EXPECT_EQ(out[static_cast<size_t>(v)], k.one(row.data(), xq.data() + static_cast<size_t>(v) * xb, n))
            << tensor_type_name(t) << (isa == VecDotIsa::Avx2 ? " avx2" : " scalar") << " nt " << nt << " vector " << v;
      }
    }
  }
}

// Extreme quants: every weight at its largest magnitude against activations at +-127 (the
// int16 pair sums of the AVX2 kernels must not saturate, the int32 block sums not overflow).
TEST_P(VecDotQ8, ExtremeValuesDoNotSaturate) {
  const TensorType t = GetParam();
  const ActQuant q = act_quant_for(t);
  const int64_t n = 512;
  std::mt19937 rng(3);
  for (int pattern = 0; pattern < 4; ++pattern) {
    std::vector<uint8_t> row(tensor_row_bytes(t, n), pattern % 2 ? 0xFF : 0x00);
    if (pattern >= 2) {
      for (auto& byte : row) byte = (rng() & 1) ? 0xFF : 0x00;
    }
    const auto& info = tensor_type_info(t);
    for (size_t b = 0; b < row.size() / info.block_bytes; ++b)
      for (size_t off : test::fp16_offsets(t)) {
        const uint16_t h = f32_to_fp16(0.01f);
        std::memcpy(row.data() + b * info.block_bytes + off, &h, 2);
      }
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = (rng() & 1) ? 1.0f : -1.0f;
    if (pattern == 1) std::fill(x.begin(), x.end(), 1.0f);
    const auto xq = quantized(q, x);
    const Sums ref = reference(t, row, x, xq);
    for (VecDotIsa isa : {VecDotIsa::Scalar, VecDotIsa::Avx2}) {
      const VecDotQ8Fn f = vec_dot_q8_kernel(t, isa);
      if (f == nullptr) continue;
      EXPECT_LE(std::fabs(f(row.data(), xq.data(), n) - ref.dot_xq), 1e-5 * ref.abs_dot_xq + 1e-30)
          << tensor_type_name(t) << " pattern " << pattern << (isa == VecDotIsa::Avx2 ? " avx2" : " scalar");
    }
  }
}

// matmul rounds every token's activations the same way whatever the batch: a batch (integer
// kernels for a few tokens, float tiles over the same rounded values for many) agrees with one
// token at a time up to float rounding, for any thread count; one token is exactly the sum of
// its three parts' integer dots.
TEST_P(VecDotQ8, MatmulBatchAgreesWithOneTokenAtATime) {
  const TensorType t = GetParam();
  const ActQuant q = act_quant_for(t);
  std::mt19937 rng(11);
  const int64_t n = 512, rows = 37;
  const size_t rb = tensor_row_bytes(t, n);
  std::vector<uint8_t> w;
  for (int64_t r = 0; r < rows; ++r) {
    const auto row = test::random_row(t, n, rng);
    w.insert(w.end(), row.begin(), row.end());
  }
  std::vector<float> deq(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r) dequantize_row(t, w.data() + r * rb, deq.data() + r * n, n);
  const VecDotQ8Fn f = vec_dot_q8_kernel(t);
  for (int64_t T : {2, 3, 7}) {
    const auto x = gaussian(T * n, rng);
    MatmulArgs a;
    a.type = t;
    a.w = w.data();
    a.row_bytes = rb;
    a.n_rows = rows;
    a.n = n;
    a.x = x.data();
    a.x_stride = n;
    a.n_tokens = T;
    a.y_stride = rows;
    std::vector<float> batch(static_cast<size_t>(T * rows));
    a.y = batch.data();
    for (int ith = 0; ith < 3; ++ith) matmul(a, ith, 3);
    for (int64_t tok = 0; tok < T; ++tok) {
      std::vector<float> one(static_cast<size_t>(rows));
      MatmulArgs b = a;
      b.x = x.data() + tok * n;
      b.n_tokens = 1;
      b.y = one.data();
      b.y_stride = 0;
      matmul(b, 0, 1);
      const size_t pb = act_quant_bytes(q, n);
      std::vector<uint8_t> parts(3 * pb);
      quantize_activations_split(q, b.x, n, 3, parts.data());
      std::vector<float> xr(static_cast<size_t>(n));
      round_activations(q, b.x, n, 3, xr.data());
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = w.data() + r * rb;
        float expect = f(row, parts.data(), n);
        for (int p = 1; p < 3; ++p) expect += f(row, parts.data() + p * pb, n);
        EXPECT_EQ(one[static_cast<size_t>(r)], expect) << "row " << r;
        double abs_dot = 0;
        for (int64_t i = 0; i < n; ++i) abs_dot += std::fabs(double{deq[static_cast<size_t>(r * n + i)]} * xr[static_cast<size_t>(i)]);
        EXPECT_NEAR(batch[static_cast<size_t>(tok * rows + r)], one[static_cast<size_t>(r)], 1e-5 * abs_dot + 1e-30)
            << "batch " << T << " token " << tok << " row " << r;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(VecDotQ8, VecDotQ8, testing::ValuesIn(kQ8Types),
                         [](const testing::TestParamInfo<TensorType>& i) {
                           return std::string(tensor_type_name(i.param));
                         });

TEST(VecDotQ8Kernels, FloatTypesKeepFloatActivations) {
  for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q2_K}) {
    EXPECT_EQ(act_quant_for(t), ActQuant::None) << tensor_type_name(t);
    EXPECT_EQ(vec_dot_q8_kernel(t), nullptr) << tensor_type_name(t);
  }
}

}  // namespace
}  // namespace pipellm

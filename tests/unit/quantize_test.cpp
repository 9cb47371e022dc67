// quantize_row: round trips through dequantize_row on Gaussian rows (error bounds per format),
// fp16/bf16 rounding against the formats' definitions, zero rows and outliers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/quantize.h"

namespace pipellm {
namespace {

constexpr int64_t kRow = 4096;  // 16 K-quant super-blocks, 128 legacy blocks

std::vector<float> round_trip(TensorType type, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(tensor_row_bytes(type, n));
  EXPECT_EQ(quantize_row(type, x.data(), q.data(), n), q.size());
  std::vector<float> y(x.size());
  dequantize_row(type, q.data(), y.data(), n);
  return y;
}

double relative_rms(const std::vector<float>& x, const std::vector<float>& y, size_t from = 0,
                    size_t to = SIZE_MAX) {
  double err = 0, ref = 0;
  for (size_t i = from; i < std::min(to, x.size()); ++i) {
    err += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
    ref += static_cast<double>(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

struct Bound {
  TensorType type;
  double max_rel_rms;  // measured on N(0,1) rows, with margin; see EXPECT below
};

class QuantizeGaussian : public testing::TestWithParam<Bound> {};

// Bounds follow from the grids (measured values sit 10-20% below them): e.g. Q4_K spreads 16 levels over a 32-value block's range
// (about 4.1 sigma), step 0.27 sigma, RMS step/sqrt(12) = 7.9%, less after the search.
TEST_P(QuantizeGaussian, RelativeRmsWithinBound) {
  const Bound b = GetParam();
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(kRow) * 8);
  for (float& v : x) v = gauss(rng) * 0.02f;  // weights' typical magnitude
  const auto y = round_trip(b.type, x);
  const double e = relative_rms(x, y);
  EXPECT_LT(e, b.max_rel_rms) << tensor_type_name(b.type) << " seed " << seed;
  // The reconstruction must also be close to the best possible: no systematic bias.
  double bias = 0;
  for (size_t i = 0; i < x.size(); ++i) bias += static_cast<double>(y[i]) - x[i];
  EXPECT_LT(std::fabs(bias / static_cast<double>(x.size())), 0.02 * 0.01) << "seed " << seed;
  std::printf("[ info     ] %s relative RMS error %.5f\n", tensor_type_name(b.type), e);
}

INSTANTIATE_TEST_SUITE_P(
    Quantize, QuantizeGaussian,
    testing::Values(Bound{TensorType::Q8_0, 0.006}, Bound{TensorType::Q6_K, 0.02}, Bound{TensorType::Q5_K, 0.04},
                    Bound{TensorType::Q4_K, 0.08}, Bound{TensorType::Q4_0, 0.09}, Bound{TensorType::F16, 3e-4},
                    // MXFP4: 8 magnitudes on a power-of-two scale, no search (measured 0.114).
                    Bound{TensorType::MXFP4, 0.13},
                    Bound{TensorType::BF16, 2e-3}),
    [](const testing::TestParamInfo<Bound>& i) { return std::string(tensor_type_name(i.param.type)); });

// Nearest-value check: the decoded result must be at least as close to x as both neighbours
// of its bit pattern (which the dequantizer decodes, and the fixtures verify).
template <typename Decode>
void expect_nearest(float x, uint16_t bits, Decode decode, const char* what) {
  const float y = decode(bits);
  const double err = std::fabs(static_cast<double>(x) - y);
  const uint16_t up = static_cast<uint16_t>(bits + 1), down = static_cast<uint16_t>(bits - 1);
  for (uint16_t nb : {up, down}) {
    const float z = decode(nb);
    if (std::isnan(z) || (nb & 0x7fff) == 0 || ((nb ^ bits) & 0x8000)) continue;  // wrapped sign or NaN
    EXPECT_LE(err, std::fabs(static_cast<double>(x) - z)) << what << " x=" << x << " bits=" << bits;
    if (err == std::fabs(static_cast<double>(x) - z)) {
      EXPECT_EQ(bits & 1, 0) << what << " tie not to even, x=" << x;
    }
  }
}

TEST(QuantizeFloat, F16AndBF16RoundToNearest) {
  std::mt19937 rng(12345);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> expo(-26, 15);  // fp16 subnormals up to just below max
  std::vector<float> x(4096);
  for (float& v : x) v = std::ldexp(mant(rng), expo(rng)) * (rng() & 1 ? -1.0f : 1.0f);
  std::vector<uint16_t> h(x.size()), b(x.size());
  quantize_row(TensorType::F16, x.data(), h.data(), static_cast<int64_t>(x.size()));
  quantize_row(TensorType::BF16, x.data(), b.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::fabs(x[i]) < 65504.0f) expect_nearest(x[i], h[i], fp16_to_f32, "f16");
    expect_nearest(x[i], b[i], bf16_to_f32, "bf16");
  }
}

TEST(QuantizeFloat, EveryHalfPatternRoundTrips) {
  std::vector<uint16_t> bits, out(65536);
  for (uint32_t v = 0; v < 65536; ++v) bits.push_back(static_cast<uint16_t>(v));
  for (TensorType t : {TensorType::F16, TensorType::BF16}) {
    std::vector<float> f(65536);
    dequantize_row(t, bits.data(), f.data(), 65536);
    quantize_row(t, f.data(), out.data(), 65536);
    for (uint32_t v = 0; v < 65536; ++v) {
      if (std::isnan(f[v])) {
        EXPECT_TRUE(std::isnan(t == TensorType::F16 ? fp16_to_f32(out[v]) : bf16_to_f32(out[v])));
        continue;
      }
      ASSERT_EQ(out[v], bits[v]) << tensor_type_name(t) << " pattern " << v;
    }
  }
}

class QuantizeEdge : public testing::TestWithParam<TensorType> {};

TEST_P(QuantizeEdge, ZeroRowStaysZero) {
  const std::vector<float> x(kRow, 0.0f);
  const auto y = round_trip(GetParam(), x);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], 0.0f) << "element " << i;
}

TEST_P(QuantizeEdge, OutlierKeepsOtherBlocksAndStaysFinite) {
  const TensorType type = GetParam();
  std::mt19937 rng(7);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (float outlier : {1e4f, -3e6f, 1e30f}) {
    if (type == TensorType::F16 && std::fabs(outlier) > 65504.0f) continue;  // inf is F16's answer
    std::vector<float> x(kRow);
    for (float& v : x) v = gauss(rng);
    x[1000] = outlier;
    const auto y = round_trip(type, x);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(std::isfinite(y[i])) << "element " << i << " outlier " << outlier;
    // Elements outside the outlier's 256-element super-block are unaffected.
    EXPECT_LT(relative_rms(x, y, 0, 768), 0.12) << "outlier " << outlier;
    EXPECT_LT(relative_rms(x, y, 1024, x.size()), 0.12) << "outlier " << outlier;
    if (std::fabs(outlier) < 1e5f) {
      EXPECT_NEAR(y[1000], outlier, 0.1 * std::fabs(outlier));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Quantize, QuantizeEdge,
                         testing::Values(TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0,
                                         TensorType::Q4_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K),
                         [](const testing::TestParamInfo<TensorType>& i) {
                           return std::string(tensor_type_name(i.param));
                         });

TEST(QuantizeRow, UnsupportedTypeNamesIt) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> out(1024);
  EXPECT_FALSE(can_quantize(TensorType::Q3_K));
  try {
    quantize_row(TensorType::Q3_K, x.data(), out.data(), 256);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q3_K"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quantize_row(TensorType::Q4_K, x.data(), out.data(), 128), Error);
}

}  // namespace
}  // namespace pipellm

// vec_dot_row (scalar and AVX2 kernels) against a float64 dot of dequantize_row's output.
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
#include "kernels/cpu/vec_dot.h"
#include "tests/unit/vec_dot_test_util.h"

namespace pipellm {
namespace {

const TensorType kAllTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16,  TensorType::Q4_0,
                                TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,  TensorType::Q8_0,
                                TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K,  TensorType::Q5_K,
                                TensorType::Q6_K, TensorType::IQ4_NL, TensorType::IQ4_XS};

using test::random_row;

struct Reference {
  double dot;      // float64 dot of the dequantized row with x
  double abs_dot;  // sum |w_i x_i|: the scale float rounding errors are relative to
};

Reference reference_dot(TensorType t, const std::vector<uint8_t>& row, const std::vector<float>& x) {
  std::vector<float> w(x.size());
  dequantize_row(t, row.data(), w.data(), static_cast<int64_t>(x.size()));
  Reference r{0, 0};
  for (size_t i = 0; i < x.size(); ++i) {
    r.dot += static_cast<double>(w[i]) * x[i];
    r.abs_dot += std::fabs(static_cast<double>(w[i]) * x[i]);
  }
  return r;
}

class VecDot : public testing::TestWithParam<TensorType> {};

void check_kernel(TensorType t, VecDotFn f, const char* isa) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  std::normal_distribution<float> gauss;
  for (int64_t n : {256, 1024, 4096, 11008 / 256 * 256}) {
    for (int rep = 0; rep < 4; ++rep) {
      const auto row = random_row(t, n, rng);
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = gauss(rng);
      const Reference ref = reference_dot(t, row, x);
      const double got = f(row.data(), x.data(), n);
      // Relative to sum |w x| so cancellation in the dot cannot make the bound meaningless.
      EXPECT_LE(std::fabs(got - ref.dot), 1e-5 * ref.abs_dot + 1e-30)
          << tensor_type_name(t) << " " << isa << " n=" << n << " ref=" << ref.dot << " got=" << got
          << " seed=" << seed;
    }
  }
}

TEST_P(VecDot, ScalarMatchesFloat64Reference) {
  const VecDotFn f = vec_dot_kernel(GetParam(), VecDotIsa::Scalar);
  ASSERT_NE(f, nullptr);
  check_kernel(GetParam(), f, "scalar");
}

TEST_P(VecDot, Avx2MatchesFloat64Reference) {
  if (!vec_dot_isa_available(VecDotIsa::Avx2)) GTEST_SKIP() << "CPU without AVX2+FMA+F16C";
  const VecDotFn f = vec_dot_kernel(GetParam(), VecDotIsa::Avx2);
  if (f == nullptr) GTEST_SKIP() << "no AVX2 kernel for " << tensor_type_name(GetParam()) << " (scalar is used)";
  check_kernel(GetParam(), f, "avx2");
}

TEST_P(VecDot, RowsAndDispatchAgree) {
  const TensorType t = GetParam();
  std::mt19937 rng(99);
  const int64_t n = 512, rows = 5;
  const size_t rb = tensor_row_bytes(t, n);
  std::vector<uint8_t> w;
  for (int r = 0; r < rows; ++r) {
    const auto row = random_row(t, n, rng);
    w.insert(w.end(), row.begin(), row.end());
  }
  std::vector<float> x(n);
  std::normal_distribution<float> gauss;
  for (float& v : x) v = gauss(rng);
  std::vector<float> y(rows);
  vec_dot_rows(t, w.data(), rb, rows, x.data(), n, y.data());
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(y[r], vec_dot_row(t, w.data() + r * rb, x.data(), n)) << "row " << r;
    const Reference ref = reference_dot(t, std::vector<uint8_t>(w.begin() + r * rb, w.begin() + (r + 1) * rb), x);
    EXPECT_LE(std::fabs(y[r] - ref.dot), 1e-5 * ref.abs_dot + 1e-30) << "row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(VecDot, VecDot, testing::ValuesIn(kAllTypes),
                         [](const testing::TestParamInfo<TensorType>& i) {
                           return std::string(tensor_type_name(i.param));
                         });

TEST(VecDotRow, F32OddLengthAndErrors) {
  std::vector<float> w = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, x(11, 0.5f);
  EXPECT_FLOAT_EQ(vec_dot_row(TensorType::F32, w.data(), x.data(), 11), 33.0f);
  std::vector<uint8_t> block(256);
  EXPECT_THROW(vec_dot_row(TensorType::Q4_K, block.data(), x.data(), 100), Error);
  try {
    vec_dot_row(TensorType::IQ2_XS, block.data(), x.data(), 256);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("IQ2_XS"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipellm

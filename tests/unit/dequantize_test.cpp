// dequantize_row against llama.cpp's gguf-py reference dequantizers (ref/dequant.json):
// every tensor of every fixture model, one test case per (model, tensor).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/util/error.h"
#include "kernels/cpu/dequantize.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

struct DequantCase {
  std::string model;   // "tiny-llama-Q4_K_M" (file name without .gguf)
  std::string tensor;  // "blk.0.attn_q.weight"
  nlohmann::json ref;  // {type, ne, sum, sumsq, first, at}
};

std::vector<DequantCase> load_cases() {
  std::vector<DequantCase> cases;
  std::ifstream in(test::testdata("ref/dequant.json"));
  if (!in) return cases;  // DequantFixtures.CasesLoaded reports it
  const auto all = nlohmann::json::parse(in);
  for (const auto& [file, tensors] : all.items()) {
    const std::string model = file.substr(0, file.size() - std::string(".gguf").size());
    for (const auto& [name, ref] : tensors.items()) cases.push_back({model, name, ref});
  }
  return cases;
}

std::string case_name(const testing::TestParamInfo<DequantCase>& info) {
  std::string s = info.param.model + "__" + info.param.tensor;
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

TEST(DequantFixtures, CasesLoaded) {
  const auto cases = load_cases();
  EXPECT_GT(cases.size(), 300u) << "ref/dequant.json missing or truncated under " << test::testdata("");
}

class DequantizeReference : public testing::TestWithParam<DequantCase> {};

TEST_P(DequantizeReference, MatchesGgufPy) {
  const DequantCase& c = GetParam();
  const auto file = GgufFile::open(test::model_path(c.model));
  const TensorView& t = file->tensor(c.tensor);

  ASSERT_EQ(std::string(tensor_type_name(t.type)), c.ref.at("type").get<std::string>());
  const auto ne = c.ref.at("ne").get<std::vector<int64_t>>();
  ASSERT_EQ(static_cast<size_t>(t.n_dims), ne.size());
  for (size_t d = 0; d < ne.size(); ++d) ASSERT_EQ(t.ne[d], ne[d]) << "dim " << d;

  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  for (int64_t r = 0; r < t.n_rows(); ++r)
    dequantize_row(t.type, t.row(r), out.data() + r * t.ne[0], t.ne[0]);

  double sum = 0, sumsq = 0;
  for (float v : out) {
    sum += v;
    sumsq += static_cast<double>(v) * v;
  }
  const double ref_sum = c.ref.at("sum").get<double>();
  const double ref_sumsq = c.ref.at("sumsq").get<double>();
  // Both sides sum the same float values in float64; only the summation order differs, so
  // the gap is a few ulps of float64 times the magnitude scale sqrt(n * sumsq).
  const double scale = std::sqrt(static_cast<double>(out.size()) * ref_sumsq);
  EXPECT_NEAR(sum, ref_sum, 1e-9 * std::fabs(ref_sum) + 1e-12 * scale + 1e-12);
  EXPECT_NEAR(sumsq, ref_sumsq, 1e-9 * ref_sumsq + 1e-12);

  const auto first = c.ref.at("first").get<std::vector<double>>();
  ASSERT_LE(first.size(), out.size());
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_FLOAT_EQ(out[i], static_cast<float>(first[i])) << "element " << i;
  for (const auto& [idx, v] : c.ref.at("at").items()) {
    const size_t k = std::stoull(idx);
    ASSERT_LT(k, out.size());
    EXPECT_FLOAT_EQ(out[k], static_cast<float>(v.get<double>())) << "flat index " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(DequantFixtures, DequantizeReference, testing::ValuesIn(load_cases()), case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(DequantizeReference);

TEST(DequantizeRow, UnsupportedTypeNamesIt) {
  std::vector<uint8_t> block(256, 0);
  std::vector<float> out(256);
  try {
    dequantize_row(TensorType::IQ2_XXS, block.data(), out.data(), 256);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("IQ2_XXS"), std::string::npos) << e.what();
  }
}

TEST(DequantizeRow, PartialBlockRejected) {
  std::vector<uint8_t> block(64, 0);
  std::vector<float> out(64);
  EXPECT_THROW(dequantize_row(TensorType::Q4_0, block.data(), out.data(), 31), Error);
}

}  // namespace
}  // namespace pipellm

// dequantize_row against llama.cpp's gguf-py reference dequantizers: every tensor of every
// fixture model, one test case per (model, tensor). ref/dequant.json covers the llama/qwen
// fixtures, ref/dequant-arch.json the gemma3/phi3/qwen3moe/llama-MoE/gpt-oss ones (3-D expert
// stacks and MXFP4 included). Sampled elements must be the reference's floats exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "kernels/cpu/dequantize.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

struct DequantCase {
  std::string model;   // "tiny-llama-Q4_K_M" (file name without .gguf)
  std::string tensor;  // "blk.0.attn_q.weight"
  nlohmann::json ref;  // {type, ne, sum, sumsq, first, at}
};

// The reference files: each maps "<model>.gguf" to {tensor name: reference}.
const char* const kRefFiles[] = {"ref/dequant.json", "ref/dequant-arch.json", "next/ref/dequant.json"};

std::vector<DequantCase> load_cases(const char* ref_file) {
  std::vector<DequantCase> cases;
  std::ifstream in(test::testdata(ref_file));
  if (!in) return cases;  // DequantFixtures.CasesLoaded reports it
  const auto all = nlohmann::json::parse(in);
  for (const auto& [file, tensors] : all.items()) {
    const std::string model = file.substr(0, file.size() - std::string(".gguf").size());
    for (const auto& [name, ref] : tensors.items()) cases.push_back({model, name, ref});
  }
  return cases;
}

std::vector<DequantCase> load_cases() {
  std::vector<DequantCase> cases;
  for (const char* f : kRefFiles) {
    auto more = load_cases(f);
    cases.insert(cases.end(), more.begin(), more.end());
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
  EXPECT_GT(load_cases("ref/dequant.json").size(), 300u) << "ref/dequant.json missing or truncated under "
                                                          << test::testdata("");
  // gemma3 80, phi3 15, qwen3moe 27, llama-MoE 23, gpt-oss 41 tensors.
  const auto arch = load_cases("ref/dequant-arch.json");
  EXPECT_GE(arch.size(), 186u) << "ref/dequant-arch.json missing or truncated under " << test::testdata("");
  int mxfp4 = 0, stacks = 0;
  for (const auto& c : arch) {
    mxfp4 += c.ref.at("type").get<std::string>() == "MXFP4";
    stacks += c.ref.at("ne").size() == 3;
  }
  EXPECT_GE(mxfp4, 6) << "gpt-oss expert stacks";
  EXPECT_GE(stacks, 6 + 6 + 6);  // gpt-oss, qwen3moe, llama-MoE: gate/up/down of two layers each
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

  // Rows of every dimension above the first in order (a 3-D expert stack is n_expert matrices):
  // the flat index of the reference is the GGUF element order.
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

  // The JSON numbers are the reference's float32 values printed as doubles: exact as floats.
  const auto first = c.ref.at("first").get<std::vector<double>>();
  ASSERT_LE(first.size(), out.size());
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_EQ(out[i], static_cast<float>(first[i])) << "element " << i;
  for (const auto& [idx, v] : c.ref.at("at").items()) {
    const size_t k = std::stoull(idx);
    ASSERT_LT(k, out.size());
    EXPECT_EQ(out[k], static_cast<float>(v.get<double>())) << "flat index " << k;
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

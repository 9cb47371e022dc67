// Random-model generation: tensor type mixes follow llama-quantize (checked against the types in
// llama.cpp's own fixture files) and file sizes match llama.cpp's files of the same shapes.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/quant_mix.h"
#include "engine/model_gen/random_model.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

const nlohmann::json& dequant_ref() {
  static const nlohmann::json j = [] {
    std::ifstream in(test::testdata("ref/dequant.json"));
    return nlohmann::json::parse(in);
  }();
  return j;
}

ModelShape tiny_shape(const std::string& arch, bool tied) {
  ModelShape s = *model_preset("tiny");
  s.arch = arch;
  s.tied_output = tied;
  if (arch != "llama") s.rms_eps = 1e-6f;
  return s;
}

void expect_plan_matches_fixture(const std::string& model, const ModelShape& shape, const std::string& quant) {
  const auto& ref = dequant_ref()[model + ".gguf"];
  ASSERT_FALSE(ref.is_null()) << model;
  const auto plan = plan_model_tensors(shape, *file_type_from_name(quant));
  EXPECT_EQ(plan.size(), ref.size()) << model;
  for (const auto& t : plan) {
    ASSERT_TRUE(ref.contains(t.name)) << model << ": llama.cpp's file has no " << t.name;
    EXPECT_EQ(tensor_type_name(t.type), ref[t.name]["type"].get<std::string>()) << model << " " << t.name;
    EXPECT_EQ(t.ne, ref[t.name]["ne"].get<std::vector<int64_t>>()) << model << " " << t.name;
  }
}

TEST(ModelGen, TypeMixesMatchLlamaQuantize) {
  for (const char* q : {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"})
    expect_plan_matches_fixture(std::string("tiny-llama-") + q, tiny_shape("llama", false), q);
  expect_plan_matches_fixture("tiny-tied-Q4_K_M", tiny_shape("llama", true), "Q4_K_M");
  expect_plan_matches_fixture("tiny-tied-Q8_0", tiny_shape("llama", true), "Q8_0");
  expect_plan_matches_fixture("tiny-qwen2-Q4_K_M", tiny_shape("qwen2", false), "Q4_K_M");
  expect_plan_matches_fixture("tiny-qwen3-Q4_K_M", tiny_shape("qwen3", false), "Q4_K_M");
}

double gib(uint64_t b) { return static_cast<double>(b) / (1ull << 30); }

TEST(ModelGen, SizesMatchLlamaCppFiles) {
  // Sizes of llama.cpp's files of these shapes (issue 2): 4.58, 4.33, 7.95 GiB and 763 MiB.
  const auto l8 = *model_preset("llama3-8b");
  EXPECT_NEAR(gib(planned_bytes(plan_model_tensors(l8, *file_type_from_name("Q4_K_M")))), 4.58, 0.01);
  EXPECT_NEAR(gib(planned_bytes(plan_model_tensors(l8, *file_type_from_name("Q4_0")))), 4.33, 0.01);
  EXPECT_NEAR(gib(planned_bytes(plan_model_tensors(l8, *file_type_from_name("Q8_0")))), 7.95, 0.01);
  const auto l1 = *model_preset("llama3.2-1b");
  EXPECT_NEAR(static_cast<double>(planned_bytes(plan_model_tensors(l1, *file_type_from_name("Q4_K_M")))) /
                  (1 << 20),
              763.0, 1.5);
}

TEST(ModelGen, WritesALoadableModelWithTheVocabCopied) {
  auto vocab = GgufFile::open(test::model_path("tiny-llama-F32"));
  RandomModelOptions opt;
  opt.shape = tiny_shape("qwen3", false);
  opt.file_type = *file_type_from_name("Q4_K_M");
  opt.vocab = vocab.get();
  ThreadPool pool(2);
  const std::string path = ::testing::TempDir() + "/pipellm_mkmodel_test.gguf";
  write_random_model(opt, path, pool);
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->get_string("general.architecture"), "qwen3");
  EXPECT_EQ(f->get_u32("qwen3.block_count"), 2u);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens"), vocab->get_string_array("tokenizer.ggml.tokens"));
  const auto plan = plan_model_tensors(opt.shape, opt.file_type);
  ASSERT_EQ(f->tensors().size(), plan.size());
  for (size_t k = 0; k < plan.size(); ++k) {
    EXPECT_EQ(f->tensors()[k].name, plan[k].name);
    EXPECT_EQ(f->tensors()[k].nbytes, plan[k].nbytes());
  }
  // Weights are finite with the intended spread: sd 0.02 for matrices, norms near 1.
  const TensorView& q = f->tensor("blk.0.attn_q.weight");
  std::vector<float> row(static_cast<size_t>(q.ne[0]));
  double sum2 = 0;
  for (int64_t r = 0; r < q.n_rows(); ++r) {
    dequantize_row(q.type, q.row(r), row.data(), q.ne[0]);
    for (float v : row) {
      ASSERT_TRUE(std::isfinite(v));
      sum2 += static_cast<double>(v) * v;
    }
  }
  EXPECT_NEAR(std::sqrt(sum2 / static_cast<double>(q.n_elements())), 0.02, 0.003);
  const TensorView& n = f->tensor("blk.1.ffn_norm.weight");
  dequantize_row(n.type, n.data, row.data(), n.ne[0]);
  EXPECT_NEAR(row[0], 1.0f, 0.1f);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace pipellm

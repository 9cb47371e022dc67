// The KV cache and batching: prefill == token-by-token decode, several sequences in one batch
// == each alone, a model split into two stages == the whole model.
#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/cpu/cpu_model.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

std::unique_ptr<CpuModel> open_model(const std::string& name, TensorType kv, int n_slots = 1) {
  CpuModelOptions opt;
  opt.n_threads = 2;
  opt.stage.n_ctx = 64;
  opt.stage.n_slots = n_slots;
  opt.stage.kv_type = kv;
  return CpuModel::open(test::model_path(name), opt);
}

std::vector<int32_t> ref_tokens(const std::string& name) {
  return test::read_ids(test::testdata("ref/" + name + ".tokens"));
}

double worst_rel(const std::vector<float>& a, const std::vector<float>& b, int V) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0;
  for (size_t p = 0; p * static_cast<size_t>(V) < a.size(); ++p) {
    worst = std::max(worst, test::rel_rms(a.data() + p * static_cast<size_t>(V), b.data() + p * static_cast<size_t>(V),
                                          static_cast<size_t>(V)));
  }
  return worst;
}

struct PrefillCase {
  std::string model;
  TensorType kv;
  double bound;
};

class PrefillVsDecode : public ::testing::TestWithParam<PrefillCase> {};

TEST_P(PrefillVsDecode, SameLogits) {
  const auto& c = GetParam();
  auto model = open_model(c.model, c.kv);
  const auto tokens = ref_tokens(c.model);
  const int V = model->config().n_vocab;

  std::vector<float> prefill;
  model->stage().forward(Batch::sequence(tokens, 0, 0, true), prefill);

  std::vector<float> decoded, one;
  for (size_t i = 0; i < tokens.size(); ++i) {
    model->stage().forward(Batch::sequence({tokens[i]}, static_cast<int32_t>(i), 0), one);
    ASSERT_EQ(one.size(), static_cast<size_t>(V));
    decoded.insert(decoded.end(), one.begin(), one.end());
  }
  const double worst = worst_rel(decoded, prefill, V);
  EXPECT_LT(worst, c.bound) << c.model;
  // The cache must matter: without it the last position's logits would differ a lot.
  auto fresh = open_model(c.model, c.kv);
  fresh->stage().forward(Batch::sequence({tokens.back()}, 0, 0), one);
  EXPECT_GT(test::rel_rms(one.data(), decoded.data() + decoded.size() - static_cast<size_t>(V), static_cast<size_t>(V)),
            0.05);
}

INSTANTIATE_TEST_SUITE_P(KvTypes, PrefillVsDecode,
                         ::testing::Values(PrefillCase{"tiny-llama-Q4_K_M", TensorType::F16, 1e-3},
                                           PrefillCase{"tiny-llama-F32", TensorType::F32, 1e-5},
                                           PrefillCase{"tiny-qwen2-Q8_0", TensorType::F16, 1e-3},
                                           PrefillCase{"tiny-qwen3-Q4_K_M", TensorType::F32, 1e-5}));

TEST(Batching, TwoSequencesInOneBatchEqualEachAlone) {
  const std::string name = "tiny-qwen3-Q8_0";
  const auto ref = ref_tokens(name);
  const std::vector<int32_t> a(ref.begin(), ref.begin() + 20);
  const std::vector<int32_t> b(ref.rbegin(), ref.rbegin() + 13);
  auto model = open_model(name, TensorType::F32, 2);
  const int V = model->config().n_vocab;

  std::vector<float> alone_a, alone_b;
  model->stage().forward(Batch::sequence(a, 0, 0, true), alone_a);
  model->stage().forward(Batch::sequence(b, 0, 1, true), alone_b);

  // Interleave both sequences in one batch; the slots are overwritten from position 0.
  Batch mixed;
  for (size_t i = 0; i < a.size(); ++i) {
    mixed.add(a[i], static_cast<int32_t>(i), 0, true);
    if (i < b.size()) mixed.add(b[i], static_cast<int32_t>(i), 1, true);
  }
  std::vector<float> both;
  model->stage().forward(mixed, both);
  ASSERT_EQ(both.size(), (a.size() + b.size()) * static_cast<size_t>(V));
  std::vector<float> got_a, got_b;
  for (size_t i = 0, row = 0; i < a.size(); ++i) {
    got_a.insert(got_a.end(), both.begin() + static_cast<long>(row * V), both.begin() + static_cast<long>((row + 1) * V));
    ++row;
    if (i < b.size()) {
      got_b.insert(got_b.end(), both.begin() + static_cast<long>(row * V), both.begin() + static_cast<long>((row + 1) * V));
      ++row;
    }
  }
  EXPECT_LT(worst_rel(got_a, alone_a, V), 1e-5);
  EXPECT_LT(worst_rel(got_b, alone_b, V), 1e-5);

  // Then one decode step of each sequence in one batch, against single steps.
  Batch step;
  step.add(7, static_cast<int32_t>(a.size()), 0, true);
  step.add(9, static_cast<int32_t>(b.size()), 1, true);
  std::vector<float> stepped;
  model->stage().forward(step, stepped);
  auto solo = open_model(name, TensorType::F32, 2);
  std::vector<float> ignore, solo_a, solo_b;
  solo->stage().forward(Batch::sequence(a, 0, 0), ignore);
  solo->stage().forward(Batch::sequence(b, 0, 1), ignore);
  solo->stage().forward(Batch::sequence({7}, static_cast<int32_t>(a.size()), 0), solo_a);
  solo->stage().forward(Batch::sequence({9}, static_cast<int32_t>(b.size()), 1), solo_b);
  EXPECT_LT(test::rel_rms(stepped.data(), solo_a.data(), static_cast<size_t>(V)), 1e-5);
  EXPECT_LT(test::rel_rms(stepped.data() + V, solo_b.data(), static_cast<size_t>(V)), 1e-5);
}

TEST(Batching, LogitsOnlyForRequestedRows) {
  auto model = open_model("tiny-llama-Q8_0", TensorType::F16);
  const auto tokens = ref_tokens("tiny-llama-Q8_0");
  std::vector<float> all, last;
  model->stage().forward(Batch::sequence(tokens, 0, 0, true), all);
  model->stage().forward(Batch::sequence(tokens, 0, 0, false), last);
  const size_t V = static_cast<size_t>(model->config().n_vocab);
  ASSERT_EQ(last.size(), V);
  EXPECT_LT(test::rel_rms(last.data(), all.data() + all.size() - V, V), 1e-6);
}

TEST(Batching, RejectsBadBatches) {
  auto model = open_model("tiny-llama-Q8_0", TensorType::F16);
  std::vector<float> out;
  EXPECT_THROW(model->stage().forward(Batch(), out), InvalidArgument);
  EXPECT_THROW(model->stage().forward(Batch::sequence({5000}, 0, 0), out), InvalidArgument);  // vocab 1024
  EXPECT_THROW(model->stage().forward(Batch::sequence({1}, 64, 0), out), InvalidArgument);    // ctx 64
  EXPECT_THROW(model->stage().forward(Batch::sequence({1}, 0, 1), out), InvalidArgument);     // one slot
  EXPECT_THROW(model->stage().forward(Batch::sequence({1}, 3, 0), out), InvalidArgument);     // gap
}

TEST(Stages, TwoStagesChainedEqualTheWholeModel) {
  const std::string name = "tiny-qwen2-Q4_K_M";
  const auto tokens = ref_tokens(name);
  auto whole = open_model(name, TensorType::F16);
  std::vector<float> expected;
  whole->stage().forward(Batch::sequence(tokens, 0, 0, true), expected);

  auto file = GgufFile::open(test::model_path(name));
  const ModelConfig cfg = ModelConfig::from_gguf(*file);
  ASSERT_EQ(cfg.n_layer, 2);
  ThreadPool pool(2);
  CpuStageOptions opt;
  opt.n_ctx = 64;
  CpuStage head(*file, cfg, {0, 1}, true, false, opt, pool);
  CpuStage tail(*file, cfg, {1, 2}, false, true, opt, pool);
  EXPECT_EQ(head.weights().output, nullptr);
  EXPECT_EQ(tail.weights().token_embd, nullptr);
  EXPECT_EQ(head.weights().layers.size(), 1u);

  Batch b = Batch::sequence(tokens, 0, 0, true);
  std::vector<float> hidden, logits;
  head.forward(b, hidden);
  ASSERT_EQ(hidden.size(), tokens.size() * static_cast<size_t>(cfg.n_embd));
  b.hidden = hidden.data();
  tail.forward(b, logits);
  EXPECT_LT(worst_rel(logits, expected, cfg.n_vocab), 1e-6);
}

}  // namespace
}  // namespace pipellm

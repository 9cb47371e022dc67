// Every fixture model against llama.cpp's logits and greedy continuation (fixtures/ref).
#include <gtest/gtest.h>

#include <cstdio>

#include "engine/cpu/cpu_model.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

using test::fixture_models;

bool is_float_model(const std::string& name) {
  return name.find("F32") != std::string::npos || name.find("F16") != std::string::npos;  // F16, BF16
}

class FixtureLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureLogits, MatchesLlamaCppLogitsAndGreedy) {
  const std::string name = GetParam();
  CpuModelOptions opt;
  opt.n_threads = 2;
  opt.stage.n_ctx = 128;
  auto model = CpuModel::open(test::model_path(name), opt);
  const int V = model->config().n_vocab;
  const auto tokens = test::read_ids(test::testdata("ref/" + name + ".tokens"));
  const auto ref = test::read_f32(test::testdata("ref/" + name + ".logits.f32"));
  ASSERT_EQ(tokens.size(), 48u);
  ASSERT_EQ(ref.size(), tokens.size() * static_cast<size_t>(V));

  std::vector<float> logits;
  model->stage().forward(Batch::sequence(tokens, 0, 0, /*all_logits=*/true), logits);
  ASSERT_EQ(logits.size(), ref.size());

  const double bound = is_float_model(name) ? 0.01 : 0.05;
  double worst = 0.0;
  int considered = 0, agreed = 0;
  for (size_t p = 0; p < tokens.size(); ++p) {
    const float* a = logits.data() + p * static_cast<size_t>(V);
    const float* r = ref.data() + p * static_cast<size_t>(V);
    const double e = test::rel_rms(a, r, static_cast<size_t>(V));
    worst = std::max(worst, e);
    EXPECT_LT(e, bound) << name << " position " << p;
    if (test::top_gap(r, static_cast<size_t>(V)) > 0.1) {
      ++considered;
      agreed += test::argmax(a, static_cast<size_t>(V)) == test::argmax(r, static_cast<size_t>(V)) ? 1 : 0;
    }
  }
  ASSERT_GT(considered, 0);
  EXPECT_GE(agreed, 0.95 * considered) << name << ": argmax agreed at " << agreed << "/" << considered;

  // Greedy continuation, one token at a time through the KV cache.
  const auto greedy = test::read_greedy(test::testdata("ref/" + name + ".greedy"));
  ASSERT_EQ(greedy.ids.size(), greedy.gaps.size());
  std::vector<float> last(logits.end() - V, logits.end());
  int pos = static_cast<int>(tokens.size());
  size_t matched = 0;
  for (size_t step = 0; step < greedy.ids.size(); ++step) {
    if (greedy.gaps[step] < 0.1) break;
    const int next = test::argmax(last.data(), static_cast<size_t>(V));
    ASSERT_EQ(next, greedy.ids[step]) << name << ": greedy step " << step;
    ++matched;
    model->stage().forward(Batch::sequence({next}, pos++, 0), last);
  }

  // Teacher-forced along the reference continuation: the decode steps whose reference gap is
  // >= 0.1 must agree (95%, as for the prompt positions), beyond the first close call too.
  model->stage().forward(Batch::sequence(tokens, 0, 0), last);
  pos = static_cast<int>(tokens.size());
  int forced_considered = 0, forced_agreed = 0;
  for (size_t step = 0; step < greedy.ids.size(); ++step) {
    if (greedy.gaps[step] >= 0.1) {
      ++forced_considered;
      forced_agreed += test::argmax(last.data(), static_cast<size_t>(V)) == greedy.ids[step] ? 1 : 0;
    }
    if (step + 1 < greedy.ids.size()) model->stage().forward(Batch::sequence({greedy.ids[step]}, pos++, 0), last);
  }
  EXPECT_GE(forced_agreed, 0.95 * forced_considered) << name << ": teacher-forced " << forced_agreed << "/"
                                                     << forced_considered;
  std::printf("[ %s ] worst rel RMS %.4f, argmax %d/%d, greedy %zu steps equal, teacher-forced %d/%d\n",
              name.c_str(), worst, agreed, considered, matched, forced_agreed, forced_considered);
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, FixtureLogits, ::testing::ValuesIn(fixture_models()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s) {
                             if (ch == '-') ch = '_';
                           }
                           return s;
                         });

}  // namespace
}  // namespace pipellm

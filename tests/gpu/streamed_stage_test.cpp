// A CudaStage under a VRAM budget (weights streamed through the staging ring) gives the same
// logits as the fully resident stage on every fixture model: prefill through the tensor-core
// path and the mat-vec path, and graph-captured decode steps, for both layer placements and with
// the overlap switched off. Budgets are chosen from the planner so that layers really stream.
#include <gtest/gtest.h>

#include <cstdio>

#include "engine/cuda/cuda_model.h"
#include "engine/model/vram_plan.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

constexpr int kCtx = 256;

cuda::CudaStageOptions base_options() {
  cuda::CudaStageOptions o;
  o.n_ctx = kCtx;
  o.n_slots = 2;
  o.max_batch_tokens = 64;
  return o;
}

struct Logits {
  std::vector<float> prefill, matvec, decode;
};

Logits run(cuda::CudaModel& m, const std::vector<int32_t>& tokens) {
  Logits r;
  auto& st = m.stage();
  const int V = m.config().n_vocab;
  st.forward(Batch::sequence(tokens, 0, 0, true), r.prefill);
  std::vector<int32_t> head(tokens.begin(), tokens.begin() + 6);
  st.forward(Batch::sequence(head, 0, 1, true), r.matvec);
  std::vector<int32_t> cur = {test::argmax(r.prefill.data() + (tokens.size() - 1) * V, V), 7};
  std::vector<int32_t> pos = {static_cast<int32_t>(tokens.size()), 6};
  const std::vector<int32_t> slot = {0, 1};
  std::vector<float> step;
  for (int i = 0; i < 6; ++i) {
    cur = test::decode_step(st, cur, pos, slot);
    st.last_logits(2, step);
    r.decode.insert(r.decode.end(), step.begin(), step.end());
    ++pos[0];
    ++pos[1];
  }
  return r;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return test::rel_rms(a.data(), b.data(), std::min(a.size(), b.size()));
}

class StreamedStage : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamedStage, LogitsEqualResident) {
  PIPELLM_REQUIRE_GPU();
  const std::string name = GetParam();
  const auto tokens = test::read_ids(test::testdata("ref/" + name + ".tokens"));
  const Logits ref = run(*cuda::CudaModel::open(test::model_path(name), base_options()), tokens);

  // Every layer streamed (no budget), and the planner's choice at its minimum budget.
  auto f = GgufFile::open(test::model_path(name));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelWeights w = ModelWeights::load(*f, c, LayerRange::all(c), true, true);
  const uint64_t minimum = plan_vram(vram_plan_input(c, w, 2, kCtx, 0)).minimum_budget;
  struct Variant {
    uint64_t budget;
    int min_streamed;
    StreamPlacement placement;
    bool overlap;
    int slots;
  };
  for (const Variant& v : {Variant{0, c.n_layer, StreamPlacement::Interleaved, true, 2},
                           Variant{0, c.n_layer, StreamPlacement::Interleaved, false, 2},
                           Variant{0, 1, StreamPlacement::ResidentFirst, true, 3},
                           Variant{minimum, 0, StreamPlacement::Interleaved, true, 2}}) {
    cuda::CudaStageOptions o = base_options();
    o.streaming.vram_budget = v.budget;
    o.streaming.min_streamed_layers = v.min_streamed;
    o.streaming.placement = v.placement;
    o.streaming.streamer.overlap = v.overlap;
    o.streaming.streamer.slots = v.slots;
    auto m = cuda::CudaModel::open(test::model_path(name), o);
    ASSERT_NE(m->stage().streamed(), nullptr);
    const VramPlan& p = m->stage().streamed()->plan();
    // At the planner's minimum a 2-layer tied model fits whole (the ring costs as much as both layers).
    if (v.min_streamed > 0) {
      EXPECT_EQ(p.n_streamed(), v.min_streamed) << name << ": " << p.summary();
    }
    if (v.budget > 0) {
      EXPECT_LE(p.device_bytes, v.budget);
    }
    const Logits got = run(*m, tokens);
    const double e1 = rel(got.prefill, ref.prefill), e2 = rel(got.matvec, ref.matvec), e3 = rel(got.decode, ref.decode);
    EXPECT_LT(e1, 1e-5) << name << " prefill, " << p.summary();
    EXPECT_LT(e2, 1e-5) << name << " mat-vec, " << p.summary();
    EXPECT_LT(e3, 1e-5) << name << " decode, " << p.summary();
    std::printf("[ %s ] %s overlap=%d: rel %.2g %.2g %.2g\n", name.c_str(), p.summary().c_str(), v.overlap ? 1 : 0,
                e1, e2, e3);
  }
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, StreamedStage, ::testing::ValuesIn(test::fixture_models()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(StreamedStage, BudgetBelowMinimumIsAClearError) {
  PIPELLM_REQUIRE_GPU();
  cuda::CudaStageOptions o = base_options();
  o.streaming.vram_budget = 1000;
  try {
    cuda::CudaModel::open(test::model_path("tiny-llama-Q4_K_M"), o);
    FAIL() << "expected an error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("streaming needs at least"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipellm

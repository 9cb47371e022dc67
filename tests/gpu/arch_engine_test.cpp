// The CUDA engine on the architectures of fixtures-arch and fixtures-next (gemma3, phi3, qwen3moe,
// llama MoE, gpt-oss/MXFP4, qwen35/qwen35moe's DeltaNet, gemma4): llama.cpp's logits and greedy ids within each file's bounds (the CPU test's
// checks, tests/arch_fixture_check.h) through the batched path, through mat-vec-sized chunks,
// and greedy decode through step() (GPU sampling, CUDA graphs); graph replay equals eager.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>

#include "engine/cuda/cuda_model.h"
#include "tests/arch_fixture_check.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

std::unique_ptr<cuda::CudaModel> open_arch(const std::string& name, bool graphs, int n_slots = 1) {
  return cuda::CudaModel::open(test::model_path(name), test::fixture_stage_options(graphs, n_slots));
}

class CudaArchFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaArchFixture, MatchesLlamaCppWithinTheFileBounds) {
  PIPELLM_REQUIRE_GPU();
  const std::string name = GetParam();
  auto model = open_arch(name, true);
  test::check_arch_fixture(name, model->config().n_vocab, test::forward_fn(model->stage()),
                           test::decode_fn(model->stage()));
}

TEST_P(CudaArchFixture, SmallChunksStayWithinTheBound) {
  PIPELLM_REQUIRE_GPU();
  auto model = open_arch(GetParam(), true);
  test::check_arch_fixture_chunks(GetParam(), model->config().n_vocab, test::forward_fn(model->stage()),
                                  {1, 5, 20});
}

// The fixture's 20-row chunks within its bounds with one stage option changed from the defaults.
void check_chunks_with(const std::string& name, const std::function<void(cuda::CudaStageOptions&)>& change) {
  cuda::CudaStageOptions opt = test::fixture_stage_options(true, 1);
  change(opt);
  auto model = cuda::CudaModel::open(test::model_path(name), opt);
  test::check_arch_fixture_chunks(name, model->config().n_vocab, test::forward_fn(model->stage()), {20});
}

TEST_P(CudaArchFixture, SeparateTensorCoreProductsStayWithinTheBound) {
  // The defaults put q/k/v and gate/up of one type in one mmq launch (MmqTuning::fuse, which
  // SmallChunksStayWithinTheBound's 20-row chunks take); the separate launches stay the ablation.
  PIPELLM_REQUIRE_GPU();
  check_chunks_with(GetParam(), [](cuda::CudaStageOptions& o) { o.mmq_tuning.fuse = false; });
}

TEST_P(CudaArchFixture, Int8TensorCoreProductsStayWithinTheBound) {
  // The defaults run the 20-row chunks' products through mmq's f16 variant (MmqTuning::f16,
  // SmallChunksStayWithinTheBound); its int8 products stay the ablation, within the same bounds.
  PIPELLM_REQUIRE_GPU();
  check_chunks_with(GetParam(), [](cuda::CudaStageOptions& o) { o.mmq_tuning.f16 = false; });
}

TEST_P(CudaArchFixture, F16ExpertProductsStayWithinTheBound) {
  // The grouped expert products on f16 rows (MmqTuning::f16_experts_from, from 256 tokens by
  // default): 20-row chunks group the pairs of the MoE fixtures, within the same bounds (the dense
  // ones: no change).
  PIPELLM_REQUIRE_GPU();
  check_chunks_with(GetParam(), [](cuda::CudaStageOptions& o) { o.mmq_tuning.f16_experts_from = 0; });
}

TEST_P(CudaArchFixture, GraphReplayEqualsEager) {
  // Two sequences of different lengths, then 12 decode steps of both.
  PIPELLM_REQUIRE_GPU();
  const std::string name = GetParam();
  const auto tokens = test::read_ids(test::fixture_ref(name, ".tokens"));
  auto eager_model = open_arch(name, false, 2);
  auto graph_model = open_arch(name, true, 2);
  const test::DecodeTrace eager = test::greedy_trace(eager_model->stage(), tokens, 2, 20, 7, 12);
  const test::DecodeTrace graph = test::greedy_trace(graph_model->stage(), tokens, 2, 20, 7, 12);
  EXPECT_GT(graph_model->stage().graphs_captured(), 0u);
  EXPECT_EQ(eager.ids, graph.ids) << name;
  ASSERT_EQ(eager.logits.size(), graph.logits.size());
  EXPECT_EQ(0, std::memcmp(eager.logits.data(), graph.logits.data(), eager.logits.size() * sizeof(float))) << name;
}

// The stage's fused MoE decode launches (CudaStageOptions::fuse_expert_decode: gate/up/activation,
// then down and the weighted sum inside moe_output's combine; qwen35moe with its shared expert,
// gpt-oss with biases) against its separate launches: two sequences, 12 decode steps (batches of
// 2: mat-vec sized, no grouping), the same logits bit for bit. (gemma4moe's [gate; up] stack takes
// the separate launches either way.)
TEST(CudaArchMoe, FusedExpertDecodeEqualsSeparateLaunches) {
  PIPELLM_REQUIRE_GPU();
  for (const std::string name :
       {"tiny-qwen3moe-Q4_K_M", "tiny-llamamoe-Q4_K_M", "tiny-gptoss-MXFP4_MOE", "tiny-qwen35moe-Q4_K_M"}) {
    SCOPED_TRACE(name);
    const auto tokens = test::read_ids(test::fixture_ref(name, ".tokens"));
    cuda::CudaStageOptions opt = test::fixture_stage_options(true, 2);
    auto fused = cuda::CudaModel::open(test::model_path(name), opt);
    opt.fuse_expert_decode = false;
    auto separate = cuda::CudaModel::open(test::model_path(name), opt);
    const test::DecodeTrace a = test::greedy_trace(fused->stage(), tokens, 2, 20, 7, 12);
    const test::DecodeTrace b = test::greedy_trace(separate->stage(), tokens, 2, 20, 7, 12);
    EXPECT_EQ(a.ids, b.ids);
    ASSERT_EQ(a.logits.size(), b.logits.size());
    EXPECT_EQ(0, std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)));
  }
}

// gpt-oss's MXFP4 expert stacks with biases as grouped tensor-core products (the bias added per
// pair afterwards: CudaStageOptions::group_gptoss_experts): chunks of 5 and 20 tokens group (4 of 8
// experts per token), within the file's bounds.
TEST(CudaArchGptOss, GroupedExpertsStayWithinTheBound) {
  PIPELLM_REQUIRE_GPU();
  const std::string name = "tiny-gptoss-MXFP4_MOE";
  cuda::CudaStageOptions opt = test::fixture_stage_options(true, 1);
  opt.group_gptoss_experts = true;
  auto model = cuda::CudaModel::open(test::model_path(name), opt);
  test::check_arch_fixture_chunks(name, model->config().n_vocab, test::forward_fn(model->stage()), {5, 20});
}

INSTANTIATE_TEST_SUITE_P(Arch, CudaArchFixture, ::testing::ValuesIn(test::arch_fixture_models()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace pipellm

// Routed experts kept in host memory (engine/cuda/host_experts.h; --cpu-moe, --n-cpu-moe, -ot):
// the MoE fixtures with the experts of layer 0, and of every layer, multiplied by the CPU beside
// the GPU stage: llama.cpp's logits and greedy ids within each file's bounds (the checks of the
// CPU and all-GPU tests, tests/arch_fixture_check.h), graph replay (host functions as graph
// nodes) equal to eager launches, steps small enough for the CPU and large enough to upload the
// experts both within the bounds, and the memory report's account of what stayed on the host.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "engine/cuda/cuda_model.h"
#include "tests/arch_fixture_check.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

struct Case {
  std::string model;
  bool all_layers;           // else layer 0 only
  uint64_t cache_bytes = 0;  // the hot-expert cache (refreshed every 2 steps)
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string s = info.param.model + (info.param.all_layers ? "_all" : "_layer0") +
                  (info.param.cache_bytes > 0 ? "_cache" + std::to_string(info.param.cache_bytes >> 10) + "k" : "");
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

std::unique_ptr<cuda::CudaModel> open_hybrid(const Case& c, bool graphs, int n_slots = 1) {
  cuda::CudaStageOptions opt = test::fixture_stage_options(graphs, n_slots);
  opt.host_experts = c.all_layers ? std::vector<bool>(64, true) : std::vector<bool>{true};
  opt.host_threads = 4;
  opt.expert_cache_bytes = c.cache_bytes;
  opt.expert_cache_refresh = 2;
  return cuda::CudaModel::open(test::model_path(c.model), opt);
}

class HostExpertsFixture : public ::testing::TestWithParam<Case> {};

TEST_P(HostExpertsFixture, MatchesLlamaCppWithinTheFileBounds) {
  PIPELLM_REQUIRE_GPU();
  auto model = open_hybrid(GetParam(), true);
  ASSERT_NE(model->stage().host_experts(), nullptr);
  test::check_arch_fixture(GetParam().model, model->config().n_vocab, test::forward_fn(model->stage()),
                           test::decode_fn(model->stage()));
}

TEST_P(HostExpertsFixture, TheCacheServesPairsOnceExpertsMovedIn) {
  // After the fixture's checks and 8 more decode steps (past several refreshes: the fixture's
  // own greedy steps may be none, as for gemma4moe, whose first step is no clear one), a cache
  // with room for every expert served pairs; without one, the report has no cache line.
  PIPELLM_REQUIRE_GPU();
  auto model = open_hybrid(GetParam(), true);
  const auto decode = test::decode_fn(model->stage());
  test::check_arch_fixture(GetParam().model, model->config().n_vocab, test::forward_fn(model->stage()), decode);
  const auto tokens = test::read_ids(test::fixture_ref(GetParam().model, ".tokens"));
  int32_t tok = tokens.back();
  for (int i = 0; i < 8; ++i) tok = decode(tok, static_cast<int32_t>(tokens.size()) + i);
  const cuda::DeviceMemoryReport r = model->stage().memory_report();
  if (GetParam().cache_bytes == 0) {
    EXPECT_EQ(r.expert_cache_slots, 0);
    EXPECT_EQ(r.format().find("expert cache"), std::string::npos);
    return;
  }
  EXPECT_GT(r.expert_cache_slots, 0);
  EXPECT_GT(r.expert_cache_used, 0);
  EXPECT_GT(r.expert_cache_pairs, 0u);
  EXPECT_GT(r.expert_cache_hits, 0u) << r.format();
  EXPECT_LE(r.expert_cache_hits, r.expert_cache_pairs);
  EXPECT_NE(r.format().find("expert cache"), std::string::npos) << r.format();
}

TEST_P(HostExpertsFixture, CpuAndUploadedStepsStayWithinTheBound) {
  // Chunks below HostExperts::kUploadMinRows rows multiply on the CPU, larger ones upload the
  // layer's experts to the device: both within the file's bound at every position.
  PIPELLM_REQUIRE_GPU();
  auto model = open_hybrid(GetParam(), true);
  test::check_arch_fixture_chunks(GetParam().model, model->config().n_vocab, test::forward_fn(model->stage()),
                                  {5, static_cast<size_t>(cuda::HostExperts::kUploadMinRows + 8)});
}

TEST_P(HostExpertsFixture, GraphReplayEqualsEager) {
  // Three sequences: a padded batch bucket of 4 (the padding row's experts add nothing).
  PIPELLM_REQUIRE_GPU();
  const auto tokens = test::read_ids(test::fixture_ref(GetParam().model, ".tokens"));
  auto eager_model = open_hybrid(GetParam(), false, 4);
  auto graph_model = open_hybrid(GetParam(), true, 4);
  const test::DecodeTrace eager = test::greedy_trace(eager_model->stage(), tokens, 3, 10, 5, 8);
  const test::DecodeTrace graph = test::greedy_trace(graph_model->stage(), tokens, 3, 10, 5, 8);
  EXPECT_GT(graph_model->stage().graphs_captured(), 0u);
  ASSERT_EQ(eager.logits.size(), graph.logits.size());
  EXPECT_EQ(0, std::memcmp(eager.logits.data(), graph.logits.data(), eager.logits.size() * sizeof(float)));
}

TEST_P(HostExpertsFixture, MemoryReportCountsTheHostExperts) {
  PIPELLM_REQUIRE_GPU();
  auto hybrid = open_hybrid(GetParam(), true);
  cuda::CudaStageOptions plain;
  plain.n_ctx = 256;
  plain.max_batch_tokens = 64;
  auto gpu = cuda::CudaModel::open(test::model_path(GetParam().model), plain);
  const cuda::DeviceMemoryReport h = hybrid->stage().memory_report(), g = gpu->stage().memory_report();
  const int n_host = GetParam().all_layers ? hybrid->config().n_layer : 1;
  EXPECT_EQ(h.host_expert_layers, n_host);
  EXPECT_EQ(h.host_expert_threads, 4);
  std::vector<bool> mask(static_cast<size_t>(hybrid->config().n_layer), false);
  for (int i = 0; i < n_host; ++i) mask[static_cast<size_t>(i)] = true;
  const uint64_t host_bytes = cuda::host_expert_bytes(hybrid->weights(), mask);
  EXPECT_EQ(h.host_expert_bytes, host_bytes);
  // The device holds the stacks' bytes less (their biases, as f32, too where the family has them).
  EXPECT_GE(g.weight_bytes - h.weight_bytes, host_bytes);
  EXPECT_NE(h.format().find("host experts"), std::string::npos) << h.format();
  EXPECT_GT(h.expert_slot_bytes, 0u);  // steps of 64 rows upload
}

INSTANTIATE_TEST_SUITE_P(Moe, HostExpertsFixture,
                         ::testing::Values(Case{"tiny-qwen3moe-Q4_K_M", false}, Case{"tiny-qwen3moe-Q4_K_M", true},
                                           Case{"tiny-llamamoe-Q4_K_M", true}, Case{"tiny-gptoss-MXFP4_MOE", true},
                                           Case{"tiny-qwen35moe-Q4_K_M", true}, Case{"tiny-gemma4moe-Q4_K_M", true},
                                           // a cache for a few experts (4 slots of about 128 KiB, 3 usable), and
                                           // one for all of them
                                           Case{"tiny-qwen3moe-Q4_K_M", true, 512 << 10},
                                           Case{"tiny-qwen3moe-Q4_K_M", true, 64 << 20},
                                           Case{"tiny-gptoss-MXFP4_MOE", true, 64 << 20},
                                           Case{"tiny-gemma4moe-Q4_K_M", true, 64 << 20}),
                         case_name);

}  // namespace
}  // namespace pipellm

// Rows of streamed matrices multiplied by the CPU in decode (engine/cuda/host_rows.h): with every
// layer streamed and half of each matrix's rows left to the CPU, the architecture fixtures stay
// within llama.cpp's bounds (tests/arch_fixture_check.h) through decode steps (CPU rows) and
// larger chunks (the rows uploaded); graph replay (host functions as graph nodes) equals eager.
// The GPU's share of rows is worked by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "engine/cuda/cuda_model.h"
#include "engine/cuda/streamed_weights.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"
#include "tests/arch_fixture_check.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

TEST(HostRows, TheGpuKeepsWholeTilesOfRows) {
  EXPECT_EQ(cuda::gpu_rows_of(4096, 0.0), 4096);
  EXPECT_EQ(cuda::gpu_rows_of(4096, 0.5), 2048);
  EXPECT_EQ(cuda::gpu_rows_of(4096, 0.3), 2816);  // 2867.2 down to a multiple of 64
  EXPECT_EQ(cuda::gpu_rows_of(1024, 0.95), 64);   // at least one tile
  EXPECT_EQ(cuda::gpu_rows_of(64, 0.5), 64);      // too small to split
  EXPECT_EQ(cuda::gpu_rows_of(100, 0.5), 64);     // 50 rounds down to 0: one tile stays, 36 rows go
}

std::unique_ptr<cuda::CudaModel> open_split(const std::string& name, bool graphs, int n_slots = 1) {
  cuda::CudaStageOptions opt = test::fixture_stage_options(graphs, n_slots);
  opt.streaming.min_streamed_layers = ModelConfig::from_gguf(*GgufFile::open(test::model_path(name))).n_layer;  // every layer
  opt.streaming.cpu_rows = 0.5;
  opt.host_threads = 4;
  return cuda::CudaModel::open(test::model_path(name), opt);
}

class HostRowsFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HostRowsFixture, MatchesLlamaCppWithinTheFileBounds) {
  PIPELLM_REQUIRE_GPU();
  auto model = open_split(GetParam(), true);
  ASSERT_NE(model->stage().cpu_rows(), nullptr);
  EXPECT_GT(model->stage().memory_report().cpu_row_bytes, 0u);
  test::check_arch_fixture(GetParam(), model->config().n_vocab, test::forward_fn(model->stage()),
                           test::decode_fn(model->stage()));
  // Chunks the CPU takes (5 rows) and chunks whose CPU rows are uploaded (20).
  test::check_arch_fixture_chunks(GetParam(), model->config().n_vocab, test::forward_fn(model->stage()),
                                  {5, 20});
}

TEST_P(HostRowsFixture, GraphReplayEqualsEager) {
  PIPELLM_REQUIRE_GPU();
  const auto tokens = test::read_ids(test::fixture_ref(GetParam(), ".tokens"));
  const test::DecodeTrace eager = test::greedy_trace(open_split(GetParam(), false, 2)->stage(), tokens, 2, 12, 5, 6);
  const test::DecodeTrace graph = test::greedy_trace(open_split(GetParam(), true, 2)->stage(), tokens, 2, 12, 5, 6);
  ASSERT_EQ(eager.logits.size(), graph.logits.size());
  EXPECT_EQ(0, std::memcmp(eager.logits.data(), graph.logits.data(), eager.logits.size() * sizeof(float)));
}

// gemma3 (Q4_K with Q6_K: a repacked type's rows repacked from the upload slot), phi3 (fused
// q/k/v and gate/up), qwen35 (DeltaNet layers and gated q).
INSTANTIATE_TEST_SUITE_P(Arch, HostRowsFixture,
                         ::testing::Values("tiny-gemma3-Q4_K_M", "tiny-phi3-Q4_K_M", "tiny-qwen35-Q4_K_M"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

}  // namespace
}  // namespace pipellm

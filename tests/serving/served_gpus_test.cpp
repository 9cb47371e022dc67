// Where the coordinator runs a model on GPUs (coordinator/served_gpus.h), without a GPU: the
// GPUs' memory is given. With -np left to it, one GPU runs fewer sequences (4, 2, 1) rather than
// leave the model too big for it; the sizes to compare with come from the partition planner
// (tested on its own) for the same model and context.
#include "coordinator/served_gpus.h"

#include <gtest/gtest.h>

#include "engine/model/model_config.h"
#include "engine/pipeline/partition_planner.h"

namespace pipellm::coord {
namespace {

const std::string kModel = std::string(PIPELLM_TESTDATA) + "/models/tiny-llama-Q8_0.gguf";
constexpr int kCtx = 1 << 16;

uint64_t need(const GgufFile& f, int slots) {
  const ModelConfig mc = ModelConfig::from_gguf(f);
  PlanInput in;
  in.kv_positions = static_cast<uint64_t>(kCtx) * static_cast<uint64_t>(slots);
  in.context_length = kCtx;
  in.max_sequences = slots;
  in.scratch_bytes = PipelineConfig{}.scratch_bytes;
  return plan_partition(ModelSizes::from_gguf(f, mc, KvType::F16), in).stages.front().total();
}

ServedGpus served(const GgufFile& f, uint64_t gpu_bytes, bool fit_slots) {
  GpuPlacementRequest r;
  r.visible_gpus = 1;
  r.gpu_bytes = {gpu_bytes};
  GpuPipelineSettings s;
  s.model = kModel;
  s.n_ctx = kCtx;
  s.n_slots = 4;
  s.fit_slots = fit_slots;
  return place_served_model(f, ModelConfig::from_gguf(f), r, s);
}

TEST(ServedGpus, FewerDefaultSequencesKeepTheModelOnOneGpu) {
  const auto f = GgufFile::open(kModel);
  const uint64_t two = need(*f, 2), four = need(*f, 4);
  ASSERT_GT(four, two + two / 20);  // the KV caches make the difference the test needs
  // Room (95% of the memory) for two sequences but not four.
  ServedGpus g = served(*f, two / 19 * 20 + 64, true);
  EXPECT_EQ(g.device, "cuda:0");
  EXPECT_EQ(g.n_slots, 2);
  EXPECT_NE(g.reason.find("2 sequence(s) at once"), std::string::npos) << g.reason;
  EXPECT_EQ(served(*f, four / 19 * 20 + 64, true).n_slots, 4);
  EXPECT_EQ(served(*f, 1 << 20, true).n_slots, 1);  // nothing fits: one, and the stage streams
  EXPECT_EQ(served(*f, two / 19 * 20 + 64, false).n_slots, 0);  // -np given: as asked
  EXPECT_EQ(served(*f, two / 19 * 20 + 64, false).reason.find("sequence(s)"), std::string::npos);
}

}  // namespace
}  // namespace pipellm::coord

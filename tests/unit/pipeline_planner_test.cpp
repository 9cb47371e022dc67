// Partition planner: hand-computed plans (balance, budgets, explicit splits, impossible plans).
#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"
#include "engine/pipeline/partition_planner.h"
#include "engine/pipeline/pipeline_config.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

// Layers of 100 bytes; token_embd 1000 bytes (rows of 10), output 200, KV 1 byte per layer-position.
ModelSizes four_layers() {
  ModelSizes m;
  m.layer_bytes = {100, 100, 100, 100};
  m.embd_bytes = 1000;
  m.embd_row_bytes = 10;
  m.output_bytes = 200;
  m.kv_bytes_per_token = 1;
  return m;
}

PlanInput stages(int n, std::vector<uint64_t> budgets = {}) {
  PlanInput in;
  in.n_stages = n;
  in.budgets = std::move(budgets);
  in.kv_positions = 10;
  in.scratch_bytes = 0;
  return in;
}

std::vector<std::pair<int, int>> ranges(const PartitionPlan& p) {
  std::vector<std::pair<int, int>> r;
  for (const auto& s : p.stages) r.emplace_back(s.first, s.last);
  return r;
}

using Ranges = std::vector<std::pair<int, int>>;

TEST(PipelinePlanner, BalancesBytesReadPerToken) {
  // Reads: stage 0 = layers + 10 (embedding row), stage 1 = layers + 200 (head).
  // Splits 1|3: 110/500, 2|2: 210/400, 3|1: 310/300 -> 3|1 has the smallest bottleneck (310).
  const PartitionPlan p = plan_partition(four_layers(), stages(2));
  EXPECT_EQ(ranges(p), (Ranges{{0, 3}, {3, 4}}));
  EXPECT_EQ(p.bottleneck(), 310u);
  EXPECT_EQ(p.stages[0].read_bytes, 310u);
  EXPECT_EQ(p.stages[1].read_bytes, 300u);
  // Memory: stage 0 = embeddings 1000 + 3 layers + KV 3 x 10; stage 1 = 1 layer + head + KV 10.
  EXPECT_EQ(p.stages[0].weight_bytes, 1300u);
  EXPECT_EQ(p.stages[0].kv_bytes, 30u);
  EXPECT_EQ(p.stages[1].weight_bytes, 300u);
  EXPECT_EQ(p.stages[1].kv_bytes, 10u);
  EXPECT_TRUE(p.stages[0].has_embeddings && !p.stages[0].has_output);
  EXPECT_TRUE(!p.stages[1].has_embeddings && p.stages[1].has_output);
}

TEST(PipelinePlanner, UnevenLayersThreeStages) {
  // Only 300 | 100 100 100 | 100 200 keeps every stage at 300 bytes.
  ModelSizes m;
  m.layer_bytes = {300, 100, 100, 100, 100, 200};
  const PartitionPlan p = plan_partition(m, stages(3));
  EXPECT_EQ(ranges(p), (Ranges{{0, 1}, {1, 4}, {4, 6}}));
  EXPECT_EQ(p.bottleneck(), 300u);
  EXPECT_DOUBLE_EQ(p.balance(), 1.0);
}

TEST(PipelinePlanner, BudgetMovesLayersOffAFullStage) {
  // Stage 0 with 3 layers needs 1000 + 300 + 30 = 1330 > 1250; with 2 layers 1220 fits.
  const PartitionPlan p = plan_partition(four_layers(), stages(2, {1250, 0}));
  EXPECT_EQ(ranges(p), (Ranges{{0, 2}, {2, 4}}));
  EXPECT_EQ(p.stages[0].total(), 1220u);
  EXPECT_EQ(p.stages[0].headroom(), 30);
  EXPECT_EQ(p.bottleneck(), 400u);
}

TEST(PipelinePlanner, ScratchCountsAgainstTheBudget) {
  PlanInput in = stages(2, {1250, 0});
  in.scratch_bytes = 100;  // 2 layers now need 1320: only 1 layer (1110 + 100) fits
  const PartitionPlan p = plan_partition(four_layers(), in);
  EXPECT_EQ(ranges(p), (Ranges{{0, 1}, {1, 4}}));
}

TEST(PipelinePlanner, ImpossibleWhenAStageCannotHoldOneLayer) {
  try {
    plan_partition(four_layers(), stages(2, {1000, 0}));  // embeddings alone fill stage 0
    FAIL() << "expected an error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("stage 0 cannot hold even one layer"), std::string::npos) << e.what();
  }
}

TEST(PipelinePlanner, ImpossibleWhenTheBudgetsAreTooSmallInTotal) {
  // Needs 1000 + 400 + 40 + 200 = 1640 in all; the budgets add up to 1500.
  try {
    plan_partition(four_layers(), stages(2, {1200, 300}));
    FAIL() << "expected an error";
  } catch (const InvalidArgument& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("1.6 KiB in all"), std::string::npos) << w;
    EXPECT_NE(w.find("add up to 1.5 KiB"), std::string::npos) << w;
  }
}

TEST(PipelinePlanner, MoreStagesThanLayers) {
  EXPECT_THROW(plan_partition(four_layers(), stages(5)), InvalidArgument);
}

TEST(PipelinePlanner, ExplicitSplitOverridesAndIsChecked) {
  PlanInput in = stages(2);
  in.explicit_layers = {{0, 1}, {1, 4}};
  const PartitionPlan p = plan_partition(four_layers(), in);
  EXPECT_TRUE(p.explicit_split);
  EXPECT_EQ(ranges(p), (Ranges{{0, 1}, {1, 4}}));
  EXPECT_EQ(p.stages[1].read_bytes, 500u);

  in.budgets = {0, 450};  // stage 1 needs 300 + 200 + 30 = 530
  try {
    plan_partition(four_layers(), in);
    FAIL() << "expected an error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("stage 1 (layers [1, 4)) needs 530 B"), std::string::npos) << e.what();
  }

  in.budgets = {};
  in.explicit_layers = {{0, 2}, {3, 4}};  // gap
  EXPECT_THROW(plan_partition(four_layers(), in), InvalidArgument);
  in.explicit_layers = {{0, 2}, {2, 3}};  // does not reach the end
  EXPECT_THROW(plan_partition(four_layers(), in), InvalidArgument);
  in.explicit_layers = {{0, 4}, {4, 4}};  // a head-only last stage is allowed when explicit
  EXPECT_EQ(plan_partition(four_layers(), in).stages[1].read_bytes, 200u);
}

TEST(PipelinePlanner, TiedOutputIsSharedOnlyOnOneStage) {
  ModelSizes m = four_layers();
  m.tied_output = true;
  m.output_bytes = 1000 + 4;  // token_embd again + output_norm
  const PartitionPlan one = plan_partition(m, stages(1));
  EXPECT_EQ(one.stages[0].weight_bytes, 1000u + 400u + 4u);
  const PartitionPlan two = plan_partition(m, stages(2));
  EXPECT_EQ(two.stages[1].weight_bytes - 100u * static_cast<uint64_t>(two.stages[1].last - two.stages[1].first), 1004u);
}

TEST(PipelinePlanner, SizesFromAFixtureFile) {
  auto f = GgufFile::open(test::model_path("tiny-llama-Q8_0"));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelSizes m = ModelSizes::from_gguf(*f, c, KvType::F16);
  ASSERT_EQ(m.n_layer(), 2);
  // blk.N: q 69632 + k 34816 + v 34816 + o 69632 + gate/up/down 3 x 208896 + two norms 2 x 1024.
  EXPECT_EQ(m.layer_bytes[0], 837632u);
  EXPECT_EQ(m.layer_bytes[1], 837632u);
  EXPECT_EQ(m.embd_bytes, 278528u);
  EXPECT_EQ(m.embd_row_bytes, 272u);
  EXPECT_EQ(m.output_bytes, 278528u + 1024u);
  EXPECT_EQ(m.kv_bytes_per_token, 2u * (128u + 128u));
}

// Layers 2 and 3 read layer 1's KV cache (gemma4's KV-sharing layers): no cut may separate them
// from it. Unconstrained the best 2-stage split is 3|1 (see BalancesBytesReadPerToken); with the
// readers only 1|3 keeps layers 1-3 together.
TEST(PipelinePlanner, KvReadersStayWithTheirSource) {
  ModelSizes m = four_layers();
  m.layer_kv_source = {-1, -1, 1, 1};
  const PartitionPlan p = plan_partition(m, stages(2));
  EXPECT_EQ(ranges(p), (Ranges{{0, 1}, {1, 4}}));
  PlanInput in = stages(2);
  in.explicit_layers = {{0, 3}, {3, 4}};
  try {
    plan_partition(m, in);
    FAIL() << "expected an error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("layer 3, which reads the KV cache of layer 1"), std::string::npos) << e.what();
  }
}

// Per-layer KV: a sliding-window layer keeps a ring of window + step - 1 positions per sequence,
// a recurrent layer no KV but a fixed state per sequence; reads count the used experts only.
TEST(PipelinePlanner, PerLayerKvStateAndExpertReads) {
  ModelSizes m = four_layers();
  m.layer_kv_bytes_per_token = {4, 4, 0, 4};
  m.layer_state_bytes = {0, 0, 1000, 0};
  m.layer_window = {0, 8, 0, 0};
  m.layer_read_bytes = {100, 100, 100, 25};  // layer 3: MoE, a quarter of its experts per token
  PlanInput in = stages(1);
  in.context_length = 64;
  in.max_sequences = 2;
  in.kv_positions = 128;
  in.step_tokens = 4;
  const PartitionPlan p = plan_partition(m, in);
  // KV: 4 x 128 + 4 x (8 + 4 - 1) x 2 + 1000 x 2 + 4 x 128.
  EXPECT_EQ(p.stages[0].kv_bytes, 512u + 88u + 2000u + 512u);
  EXPECT_EQ(p.stages[0].read_bytes, 325u + 10u + 200u);
  EXPECT_EQ(p.stages[0].weight_bytes, 400u + 1000u + 200u);
}

// Experts a GPU stage keeps in host memory (cpu_moe, n_cpu_moe) leave its budget: the fixture's
// expert matrices are the sum of its ffn_*_exps.weight tensors, read from the file here.
TEST(PipelinePlanner, ExpertsInHostMemoryLeaveTheStageBudget) {
  auto f = GgufFile::open(test::model_path("tiny-qwen3moe-Q4_K_M"));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelSizes m = ModelSizes::from_gguf(*f, c, KvType::F16);
  uint64_t experts[2] = {0, 0};
  for (const TensorView& t : f->tensors()) {
    for (int il = 0; il < 2; ++il) {
      const std::string p = "blk." + std::to_string(il) + ".ffn_";
      if (t.name.rfind(p, 0) == 0 && t.name.find("_exps.weight") != std::string::npos) experts[il] += t.nbytes;
    }
  }
  ASSERT_GT(experts[0], 0u);
  EXPECT_EQ(m.layer_expert_bytes[0], experts[0]);
  EXPECT_EQ(m.layer_expert_bytes[1], experts[1]);

  PipelineConfig cfg = PipelineConfig::parse("model: a.gguf\nstages:\n  - {device: cuda:0, n_cpu_moe: 1}\n", "t.yaml", "/");
  PlanInput in = PlanInput::from_config(cfg, c);
  ASSERT_EQ(in.host_experts.size(), 1u);
  EXPECT_EQ(in.host_experts[0], (std::vector<bool>{true, false}));
  PipelineConfig plain = cfg;
  plain.stages[0].experts = ExpertPlacementFlags{};
  PlanInput in_plain = PlanInput::from_config(plain, c);
  const uint64_t all = plan_partition(m, in_plain).stages[0].total();
  // A budget one byte short of everything on the device: enough once layer 0's experts stay home.
  in.budgets = {all - 1};
  const PartitionPlan p = plan_partition(m, in);
  EXPECT_EQ(p.stages[0].total(), all - experts[0]);
  in_plain.budgets = {all - 1};
  EXPECT_THROW(plan_partition(m, in_plain), InvalidArgument);
}

// The fixture's numbers: qwen35moe's recurrent layers hold a state of Hv*S*S + (K-1)*C floats.
TEST(PipelinePlanner, RecurrentStateFromAFixtureFile) {
  auto f = GgufFile::open(test::model_path("tiny-qwen35moe-Q4_K_M"));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelSizes m = ModelSizes::from_gguf(*f, c, KvType::F16);
  // 4 value heads of 32 x 32, conv over 3 previous rows of 2*2*32 + 4*32 = 256 channels.
  EXPECT_EQ(m.layer_state_bytes[0], (4u * 32 * 32 + 3u * 256) * 4);
  EXPECT_EQ(m.layer_kv_bytes_per_token[0], 0u);
  EXPECT_EQ(m.layer_state_bytes[1], 0u);
  EXPECT_EQ(m.layer_kv_bytes_per_token[1], 2u * 2 * 64);  // one KV head of 64, f16, K and V
  // Experts: 2 of 8 per token.
  EXPECT_LT(m.layer_read_bytes[1], m.layer_bytes[1]);
}

}  // namespace
}  // namespace pipellm

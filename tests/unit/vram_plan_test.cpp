// The VRAM planner for weight streaming: which layers stay resident, memory accounting, the
// minimum-budget error and --vram-budget parsing. Every expected figure is computed by hand.
#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/vram_plan.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

using test::mask;

// 4 layers of 100 bytes, norms 10, head 50, embeddings 40, KV 20: 520 bytes in all.
VramPlanInput small() {
  VramPlanInput in;
  in.layer_bytes = {100, 100, 100, 100};
  in.layer_fixed_bytes = 10;
  in.output_bytes = 50;
  in.embeddings_bytes = 40;
  in.kv_bytes = 20;
  in.slots = 2;
  return in;
}

TEST(VramPlan, EverythingResidentWhenItFits) {
  VramPlanInput in = small();
  for (uint64_t budget : {uint64_t{0}, uint64_t{520}, uint64_t{10000}}) {
    in.budget = budget;
    const VramPlan p = plan_vram(in);
    EXPECT_EQ(p.n_streamed(), 0);
    EXPECT_EQ(p.slots, 0);
    EXPECT_EQ(p.ring_bytes, 0u);
    EXPECT_FALSE(p.embeddings_in_host);
    EXPECT_EQ(p.resident_weight_bytes, 500u);
    EXPECT_EQ(p.device_bytes, 520u);
    EXPECT_EQ(p.host_pinned_bytes, 0u);
  }
}

TEST(VramPlan, OneByteShortStreamsOneLayerWithOneSlot) {
  VramPlanInput in = small();
  in.budget = 519;
  const VramPlan p = plan_vram(in);
  // Embeddings go to host memory (40 freed); one streamed layer needs a ring of one slot (100):
  // 10 + 50 + 20 + 3 x 100 resident + 100 ring = 480.
  EXPECT_EQ(p.streamed, mask("RRRS"));
  EXPECT_TRUE(p.embeddings_in_host);
  EXPECT_EQ(p.slots, 1);
  EXPECT_EQ(p.slot_bytes, 100u);
  EXPECT_EQ(p.ring_bytes, 100u);
  EXPECT_EQ(p.resident_weight_bytes, 360u);
  EXPECT_EQ(p.streamed_bytes, 100u);
  EXPECT_EQ(p.host_pinned_bytes, 140u);
  EXPECT_EQ(p.device_bytes, 480u);
  EXPECT_EQ(p.minimum_budget, 280u);  // 80 + 2 slots x 100
}

TEST(VramPlan, FewestStreamedLayersThatFit) {
  VramPlanInput in = small();
  in.budget = 400;
  // 1 streamed: 80 + 300 + 100 = 480; 2: 80 + 200 + 200 = 480; 3: 80 + 100 + 200 = 380.
  const VramPlan p = plan_vram(in);
  EXPECT_EQ(p.n_streamed(), 3);
  EXPECT_EQ(p.streamed, mask("RSSS"));
  EXPECT_EQ(p.slots, 2);
  EXPECT_EQ(p.ring_bytes, 200u);
  EXPECT_EQ(p.device_bytes, 380u);
  EXPECT_EQ(p.streamed_bytes, 300u);
  EXPECT_LE(p.device_bytes, in.budget);
}

TEST(VramPlan, MinimumBudgetStreamsEverything) {
  VramPlanInput in = small();
  in.budget = 280;
  const VramPlan p = plan_vram(in);
  EXPECT_EQ(p.streamed, mask("SSSS"));
  EXPECT_EQ(p.device_bytes, 280u);
  EXPECT_EQ(p.resident_weight_bytes, 60u);
}

TEST(VramPlan, BelowMinimumIsAClearError) {
  VramPlanInput in = small();
  in.budget = 279;
  try {
    plan_vram(in);
    FAIL() << "expected an error";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("too small"), std::string::npos) << m;
    EXPECT_NE(m.find("280 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("staging ring 2 x"), std::string::npos) << m;
    EXPECT_NE(m.find("KV cache"), std::string::npos) << m;
  }
}

TEST(VramPlan, InterleavedSpreadsStreamedLayers) {
  VramPlanInput in;
  in.layer_bytes.assign(8, 100);
  in.kv_bytes = 100;
  in.slots = 2;
  // k >= 2 streamed layers cost 100 + (8 - k) x 100 + 2 x 100: 3 fit in 800, 4 in 700.
  in.budget = 800;
  EXPECT_EQ(plan_vram(in).streamed, mask("RRSRRSRS"));
  in.budget = 700;
  EXPECT_EQ(plan_vram(in).streamed, mask("RSRSRSRS"));
  in.placement = StreamPlacement::ResidentFirst;
  EXPECT_EQ(plan_vram(in).streamed, mask("RRRRSSSS"));
  in.budget = 800;
  EXPECT_EQ(plan_vram(in).streamed, mask("RRRRRSSS"));
}

TEST(VramPlan, SlotSizedByTheLargestLayer) {
  VramPlanInput in;
  in.layer_bytes = {100, 150, 100, 100};
  in.slots = 2;
  // Everything 450; minimum 2 slots x 150 = 300. At 449: 1 streamed: 350 + 150 = 500;
  // 2 (layers 1, 3): 200 + 300 = 500; 3 (layers 1-3): 100 + 300 = 400.
  in.budget = 449;
  VramPlan p = plan_vram(in);
  EXPECT_EQ(p.streamed, mask("RSSS"));
  EXPECT_EQ(p.slot_bytes, 150u);
  EXPECT_EQ(p.ring_bytes, 300u);
  EXPECT_EQ(p.streamed_bytes, 350u);
  EXPECT_EQ(p.device_bytes, 400u);
  EXPECT_EQ(p.minimum_budget, 300u);
  in.budget = 299;
  EXPECT_THROW(plan_vram(in), InvalidArgument);
}

TEST(VramPlan, TiedHeadKeepsEmbeddingsResident) {
  VramPlanInput in = small();
  in.output_is_embeddings = true;
  in.output_bytes = 5;  // the final norm only
  // Everything: 10 + 5 + 40 + 20 + 400 = 475. Minimum: 35 + 40 + 2 x 100 = 275.
  in.budget = 474;
  VramPlan p = plan_vram(in);
  EXPECT_FALSE(p.embeddings_in_host);
  EXPECT_EQ(p.minimum_budget, 275u);
  // 1 streamed: 35 + 40 + 300 + 100 = 475; 2: 35 + 40 + 200 + 200 = 475; 3: 375.
  EXPECT_EQ(p.n_streamed(), 3);
  EXPECT_EQ(p.device_bytes, 375u);
  in.embeddings_in_host = false;
  in.output_is_embeddings = false;
  in.budget = 519;
  EXPECT_FALSE(plan_vram(in).embeddings_in_host);
}

TEST(VramPlan, MinStreamedForcesStreaming) {
  VramPlanInput in = small();
  in.min_streamed = 2;  // no budget: streams exactly 2 layers, 2 slots
  VramPlan p = plan_vram(in);
  EXPECT_EQ(p.streamed, mask("RSRS"));
  EXPECT_EQ(p.slots, 2);
  EXPECT_EQ(p.device_bytes, 80u + 200u + 200u);
  in.budget = 10000;
  EXPECT_EQ(plan_vram(in).n_streamed(), 2);
  in.budget = 400;  // 2 streamed need 480: the fit rule still applies (3 streamed: 380)
  EXPECT_EQ(plan_vram(in).n_streamed(), 3);
  in.min_streamed = 5;
  EXPECT_THROW(plan_vram(in), InvalidArgument);
}

TEST(VramPlan, RejectsOneSlot) {
  VramPlanInput in = small();
  in.slots = 1;
  in.budget = 400;
  EXPECT_THROW(plan_vram(in), InvalidArgument);
}

TEST(VramPlan, InputFromFixtureModel) {
  auto f = GgufFile::open(test::model_path("tiny-llama-Q4_K_M"));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelWeights w = ModelWeights::load(*f, c, LayerRange::all(c), true, true);
  const VramPlanInput in = vram_plan_input(c, w, 2, 128, 12345);
  ASSERT_EQ(in.layer_bytes.size(), static_cast<size_t>(c.n_layer));
  for (int i = 0; i < c.n_layer; ++i) {
    const LayerWeights& l = w.layers[static_cast<size_t>(i)];
    uint64_t sum = 0;
    for (LayerTensor r : {LayerTensor::Q, LayerTensor::K, LayerTensor::V, LayerTensor::O, LayerTensor::Gate, LayerTensor::Up, LayerTensor::Down})
      sum += (l[r]->nbytes + 255) / 256 * 256;
    EXPECT_EQ(in.layer_bytes[static_cast<size_t>(i)], sum);
  }
  EXPECT_EQ(in.layer_fixed_bytes, static_cast<uint64_t>(c.n_layer) * 2 * c.n_embd * 4);  // two norms per layer
  EXPECT_EQ(in.embeddings_bytes, w.token_embd->nbytes);
  EXPECT_EQ(in.output_bytes, w.output->nbytes + static_cast<uint64_t>(c.n_embd) * 4);
  EXPECT_EQ(in.kv_bytes, static_cast<uint64_t>(c.n_layer) * 2 * 128 * (c.k_dim() + c.v_dim()) * 2);
  EXPECT_EQ(in.budget, 12345u);
}

TEST(VramBudget, ParsesUnits) {
  EXPECT_EQ(parse_byte_size("2GiB"), 2147483648u);
  EXPECT_EQ(parse_byte_size("2gib"), 2147483648u);
  EXPECT_EQ(parse_byte_size("2G"), 2147483648u);
  EXPECT_EQ(parse_byte_size("1500MB"), 1500000000u);
  EXPECT_EQ(parse_byte_size("1.5GiB"), 1610612736u);
  EXPECT_EQ(parse_byte_size(" 10 KiB "), 10240u);
  EXPECT_EQ(parse_byte_size("4096"), 4096u);
  EXPECT_EQ(parse_byte_size("4096B"), 4096u);
  EXPECT_EQ(parse_byte_size("3M"), 3145728u);
}

TEST(VramBudget, RejectsJunk) {
  for (const char* s : {"", "GiB", "abc", "2XB", "-1", "1.5", "1.5.2", "2 GiB extra", "1e30"}) {
    EXPECT_THROW(parse_byte_size(s), InvalidArgument) << s;
  }
  try {
    parse_byte_size("2QB");
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--vram-budget"), std::string::npos);
  }
}

}  // namespace
}  // namespace pipellm

// Auto-fit (engine/model/vram_fit.h): with no budget and no -ngl a stage that does not fit the
// device's free memory gets a budget that does; a user's choice is taken as is; when not even the
// parts that cannot stream fit, the error names the sizes. Expected figures are worked by hand.
#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/vram_fit.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

using test::mask;

// 4 layers of 100 bytes, norms 10, head 50, embeddings 40, KV 20 (520 bytes of plan), scratch 30:
// 550 bytes with everything resident. Streaming moves the embeddings to host memory, so the
// least the device can hold is 10 + 50 + 20 + ring 2 x 100 = 280, plus scratch: 310.
VramFitInput small(uint64_t free_bytes, uint64_t margin = 100) {
  VramFitInput in;
  in.sizes.layer_bytes = {100, 100, 100, 100};
  in.sizes.layer_fixed_bytes = 10;
  in.sizes.output_bytes = 50;
  in.sizes.embeddings_bytes = 40;
  in.sizes.kv_bytes = 20;
  in.sizes.slots = 2;
  in.scratch_bytes = 30;
  in.free_bytes = free_bytes;
  in.margin_bytes = margin;
  return in;
}

std::string error_of(const VramFitInput& in) {
  try {
    fit_vram(in);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(VramFit, FitsEntirely) {
  for (uint64_t free_bytes : {uint64_t{650}, uint64_t{1} << 40}) {
    const VramFit f = fit_vram(small(free_bytes));
    EXPECT_EQ(f.mode, VramFitMode::Resident);
    EXPECT_EQ(f.budget, 0u);
    EXPECT_EQ(f.min_streamed, 0);
    EXPECT_EQ(f.plan.n_streamed(), 0);
    EXPECT_EQ(f.needed_bytes, 550u);
    EXPECT_EQ(f.message, "");
  }
}

TEST(VramFit, NeedsStreaming) {
  // 610 free - 100 margin = 510 usable; minus scratch 30: a budget of 480, which holds three
  // resident layers and a one-slot ring (10 + 50 + 20 + 300 + 100).
  VramFit f = fit_vram(small(610));
  EXPECT_EQ(f.mode, VramFitMode::AutoStreamed);
  EXPECT_EQ(f.budget, 480u);
  EXPECT_EQ(f.min_streamed, 0);
  EXPECT_EQ(f.plan.streamed, mask("RRRS"));
  EXPECT_TRUE(f.plan.embeddings_in_host);
  EXPECT_EQ(f.needed_bytes, 510u);
  EXPECT_EQ(f.usable_bytes, 510u);
  EXPECT_EQ(f.message,
            "auto-fit: 3 of 4 layers resident, 1 streamed, budget 480 B (all resident would need 550 B, 610 B "
            "free); give --vram-budget or -ngl to override");

  // Ten bytes less: two layers no longer fit beside a two-slot ring, three stream (80 + 100 + 200).
  f = fit_vram(small(600));
  EXPECT_EQ(f.mode, VramFitMode::AutoStreamed);
  EXPECT_EQ(f.budget, 470u);
  EXPECT_EQ(f.plan.n_streamed(), 3);
  EXPECT_EQ(f.plan.slots, 2);
  EXPECT_EQ(f.needed_bytes, 410u);
  EXPECT_LE(f.needed_bytes, f.usable_bytes);
  EXPECT_NE(f.message.find("auto-fit: 1 of 4 layers resident, 3 streamed, budget 470 B"), std::string::npos);
}

TEST(VramFit, MarginComesOffTheFreeMemory) {
  EXPECT_EQ(fit_vram(small(650, 100)).mode, VramFitMode::Resident);      // 550 usable: fits exactly
  EXPECT_EQ(fit_vram(small(650, 101)).mode, VramFitMode::AutoStreamed);  // one byte short
  EXPECT_EQ(fit_margin(uint64_t{1} << 30), uint64_t{512} << 20);         // small cards: 512 MiB
  EXPECT_EQ(fit_margin(uint64_t{100} << 30), uint64_t{2} << 30);         // large ones: 2%
}

TEST(VramFit, UserBudgetIsTakenAsIs) {
  VramFitInput in = small(1u << 20);  // plenty free: the budget still streams
  in.user_budget = 470;
  VramFit f = fit_vram(in);
  EXPECT_EQ(f.mode, VramFitMode::UserChoice);
  EXPECT_EQ(f.budget, 470u);
  EXPECT_EQ(f.plan.n_streamed(), 3);
  EXPECT_EQ(f.message, "");

  in.user_budget = 10000;  // larger than the device: no auto-fit, a warning
  in.free_bytes = 400;
  f = fit_vram(in);
  EXPECT_EQ(f.mode, VramFitMode::UserChoice);
  EXPECT_EQ(f.budget, 10000u);
  EXPECT_EQ(f.plan.n_streamed(), 0);
  EXPECT_EQ(f.message,
            "warning: this stage needs about 550 B (550 bytes) (weights, KV cache and ring 520 B, scratch 30 B) but "
            "the device has 400 B (400 bytes) free, of which 100 B stays free as a margin; expect an out-of-memory "
            "error (leave out --vram-budget or -ngl to fit automatically)");

  in.user_budget = 100;  // below the planner's minimum: its error, not a silent auto-fit
  EXPECT_NE(error_of(in).find("VRAM budget 100 B (100 bytes) is too small"), std::string::npos) << error_of(in);
}

TEST(VramFit, GpuLayersAreTakenAsIs) {
  VramFitInput in = small(1u << 20);
  in.gpu_layers = 1;
  VramFit f = fit_vram(in);
  EXPECT_EQ(f.mode, VramFitMode::UserChoice);
  EXPECT_EQ(f.budget, 0u);
  EXPECT_EQ(f.min_streamed, 3);
  EXPECT_EQ(f.plan.n_streamed(), 3);

  in.gpu_layers = 0;
  EXPECT_EQ(fit_vram(in).min_streamed, 4);
  in.gpu_layers = 99;  // -ngl 99: every layer of a smaller model, and no auto-fit either
  in.free_bytes = 300;
  f = fit_vram(in);
  EXPECT_EQ(f.mode, VramFitMode::UserChoice);
  EXPECT_EQ(f.min_streamed, 0);
  EXPECT_EQ(f.plan.n_streamed(), 0);
  EXPECT_NE(f.message.find("warning: this stage needs about 550 B"), std::string::npos) << f.message;

  in.gpu_layers = -1;  // min_streamed from the stage options counts as a choice too
  in.min_streamed = 2;
  in.free_bytes = 1u << 20;
  f = fit_vram(in);
  EXPECT_EQ(f.mode, VramFitMode::UserChoice);
  EXPECT_EQ(f.plan.n_streamed(), 2);
}

TEST(VramFit, ImpossibleNamesTheSizes) {
  // 400 free - 100 margin = 300 < 310, the least the stage can hold.
  EXPECT_EQ(error_of(small(400)),
            "CUDA stage does not fit on the device: even with every layer streamed it needs 310 B (310 bytes) (KV "
            "cache 20 B, scratch 30 B, staging ring 2 x 100 B, output head 50 B, norms/biases 10 B) but the device "
            "has 400 B (400 bytes) free, of which 100 B stays free as a margin; reduce the context (-c), the "
            "parallel sequences (-np) or the KV cache types (-ctk/-ctv q8_0)");
  EXPECT_EQ(fit_vram(small(410)).mode, VramFitMode::AutoStreamed);  // exactly the minimum

  // A tied head keeps the embeddings resident: they are named and counted (310 + 40).
  VramFitInput tied = small(440);
  tied.sizes.output_is_embeddings = true;
  tied.reduce_hint = "context_length or max_sequences";
  const std::string e = error_of(tied);
  EXPECT_NE(e.find("needs 350 B (350 bytes)"), std::string::npos) << e;
  EXPECT_NE(e.find(", embeddings 40 B)"), std::string::npos) << e;
  EXPECT_NE(e.find("reduce context_length or max_sequences"), std::string::npos) << e;
}

TEST(VramFit, LayersThatCannotStreamFailClearly) {
  VramFitInput in = small(610);
  in.layers_streamable = false;
  EXPECT_EQ(error_of(in),
            "CUDA stage does not fit on the device: it needs 550 B (550 bytes) (weights 500 B, KV cache 20 B, "
            "scratch 30 B) but the device has 610 B (610 bytes) free, of which 100 B stays free as a margin, and "
            "layers with experts cannot be streamed yet; reduce the context (-c), the parallel sequences (-np) or "
            "the KV cache types (-ctk/-ctv q8_0), or split the model over more GPUs");
  in.free_bytes = 650;  // fits whole: nothing needs to stream
  EXPECT_EQ(fit_vram(in).mode, VramFitMode::Resident);
}

TEST(VramFit, ExpertsStayInHostMemoryWhenTheyDoNotFit) {
  // MoE layers do not stream; each holds 60 B of routed experts. 570 free - 100 margin = 470 usable:
  // experts of layer 0 moved: 40 + 300 + 10 + 50 + 40 + 20 + scratch 30 = 490, too much; of layers
  // 0-1: 430, fits.
  VramFitInput in = small(570);
  in.layers_streamable = false;
  in.expert_bytes = {60, 60, 60, 60};
  VramFit f = fit_vram(in);
  EXPECT_EQ(f.mode, VramFitMode::AutoStreamed);
  EXPECT_EQ(f.host_expert_layers, 2);
  EXPECT_EQ(f.plan.n_streamed(), 0);
  // The 40 B left over become the expert cache: the device is then full (470).
  EXPECT_EQ(f.expert_cache_bytes, 40u);
  EXPECT_EQ(f.needed_bytes, 470u);
  EXPECT_EQ(f.message,
            "auto-fit: the routed experts of layers 0-1 (120 B) stay in host memory, multiplied by the CPU, the most "
            "used of them in a 40 B cache (all on the GPU would need 550 B, 570 B free); give --n-cpu-moe, --cpu-moe "
            "or -ot to override");
  in.expert_slot_bytes = 50;  // the upload slot counts: layers 0-1 would need 480, layers 0-2 need 420
  f = fit_vram(in);
  EXPECT_EQ(f.host_expert_layers, 3);
  EXPECT_EQ(f.expert_cache_bytes, 50u);  // 470 - 420 left, below the 180 B moved
  EXPECT_EQ(f.needed_bytes, 470u);
  in.expert_slot_bytes = 0;
  in.free_bytes = 650;  // fits whole: the experts stay on the device
  EXPECT_EQ(fit_vram(in).host_expert_layers, 0);
  in.free_bytes = 570;
  in.gpu_layers = 4;  // the user's choice is not second-guessed
  EXPECT_EQ(fit_vram(in).host_expert_layers, 0);

  // 30 B of experts per layer: all four moved still need 430 B of the 350 usable.
  in = small(450);
  in.layers_streamable = false;
  in.expert_bytes = {30, 30, 30, 30};
  EXPECT_NE(error_of(in).find("free, of which 100 B stays free as a margin, even with every routed expert in host "
                              "memory, and layers with experts cannot be streamed yet"),
            std::string::npos)
      << error_of(in);
}

TEST(VramFit, FixtureModelOneByteShort) {
  // Real sizes: the stage fits whole with exactly its need free, and streams when one byte is missing.
  const auto f = GgufFile::open(test::model_path("tiny-llama-Q4_K_M"));
  const ModelConfig c = ModelConfig::from_gguf(*f);
  const ModelWeights w = ModelWeights::load(*f, c, LayerRange::all(c), true, true);
  VramFitInput in;
  in.sizes = vram_plan_input(c, w, 1, 4096, 0);
  in.scratch_bytes = 1 << 20;
  in.margin_bytes = 0;
  VramFitInput roomy = in;
  roomy.free_bytes = uint64_t{1} << 40;
  in.free_bytes = fit_vram(roomy).needed_bytes;
  EXPECT_EQ(fit_vram(in).mode, VramFitMode::Resident);
  in.free_bytes -= 1;
  const VramFit fit = fit_vram(in);
  ASSERT_EQ(fit.mode, VramFitMode::AutoStreamed);
  EXPECT_GE(fit.plan.n_streamed(), 1);
  EXPECT_LE(fit.needed_bytes, in.free_bytes);
  EXPECT_EQ(fit.budget + in.scratch_bytes, in.free_bytes);
}

}  // namespace
}  // namespace pipellm

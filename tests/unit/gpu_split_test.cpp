// llama.cpp's multi-GPU flags on the pipeline (engine/pipeline/gpu_split.h): the flag values,
// llama.cpp's layer assignment for -ts (expected ranges computed by hand from its rule: layer i
// goes to the first GPU whose cumulative share exceeds i / (n_layer + 1)), the choice between one
// GPU and a pipeline, and the written config read back by the stages' parser.
#include "engine/pipeline/gpu_split.h"

#include <gtest/gtest.h>

#include "base/error.h"

namespace pipellm {
namespace {

using Ranges = std::vector<std::pair<int, int>>;
constexpr uint64_t kGiB = 1ull << 30;

TEST(GpuSplit, SplitModes) {
  EXPECT_EQ(parse_split_mode("none"), SplitMode::None);
  EXPECT_EQ(parse_split_mode("layer"), SplitMode::Layer);
  try {
    parse_split_mode("row");
    FAIL() << "row accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("tensor parallelism"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_split_mode("Layer"), InvalidArgument);
  EXPECT_THROW(parse_split_mode(""), InvalidArgument);
}

TEST(GpuSplit, DeviceNames) {
  const std::vector<std::pair<std::string, std::string>> good = {
      {"cpu", "cpu"},       {"none", "cpu"},   {"cuda", "cuda"}, {"cuda:1", "cuda:1"}, {"CUDA0", "cuda:0"},
      {"CUDA0,CUDA1", "cuda:0,cuda:1"}, {"cuda:2,CUDA0", "cuda:2,cuda:0"}, {"cuda:10", "cuda:10"}};
  for (const auto& [in, out] : good) EXPECT_EQ(normalize_device(in), out) << in;
  for (const std::string bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:0,", ",cuda:0", "cuda:0,,cuda:1",
                                "cuda:0,cuda:0", "CUDA1,cuda:1", "cuda:12345", "Cuda0", "cuda 0", "cpu,cuda:0"}) {
    EXPECT_THROW(normalize_device(bad), InvalidArgument) << bad;
  }
  EXPECT_EQ(listed_gpus("cpu"), std::vector<int>{});
  EXPECT_EQ(listed_gpus("cuda"), std::vector<int>{});
  EXPECT_EQ(listed_gpus("cuda:3"), std::vector<int>{3});
  EXPECT_EQ(listed_gpus("cuda:2,cuda:0,cuda:11"), (std::vector<int>{2, 0, 11}));
}

TEST(GpuSplit, TensorSplitValues) {
  EXPECT_EQ(parse_tensor_split("3,1"), (std::vector<double>{3, 1}));
  EXPECT_EQ(parse_tensor_split("3/1"), (std::vector<double>{3, 1}));
  EXPECT_EQ(parse_tensor_split("0.5,0,1.5"), (std::vector<double>{0.5, 0, 1.5}));
  EXPECT_EQ(parse_tensor_split("2"), (std::vector<double>{2}));
  for (const std::string bad : {"", "1,,2", "-1,2", "0,0", "a", "1,b", "1e999", "nan,1", "1;2"}) {
    EXPECT_THROW(parse_tensor_split(bad), InvalidArgument) << bad;
  }
}

TEST(GpuSplit, LayersByShareFollowLlamaCpp) {
  // 32 layers, 1:1: i / 33 < 0.5 for i <= 16: the first GPU takes 17 (the output counts on the last).
  EXPECT_EQ(layers_by_share(32, {1, 1}), (Ranges{{0, 17}, {17, 32}}));
  // 3:1: i / 33 < 0.75 for i <= 24.
  EXPECT_EQ(layers_by_share(32, {3, 1}), (Ranges{{0, 25}, {25, 32}}));
  // 6 layers, 1:2: i / 7 < 1/3 for i <= 2.
  EXPECT_EQ(layers_by_share(6, {1, 2}), (Ranges{{0, 3}, {3, 6}}));
  // A zero share takes no layers; the middle GPU below ends where the first does.
  EXPECT_EQ(layers_by_share(4, {1, 0, 1}), (Ranges{{0, 3}, {3, 3}, {3, 4}}));
  EXPECT_EQ(layers_by_share(4, {0, 1}), (Ranges{{0, 0}, {0, 4}}));
  // 2 layers, 1:1: both below 3 / 2 positions: llama.cpp leaves only the output to the second GPU.
  EXPECT_EQ(layers_by_share(2, {1, 1}), (Ranges{{0, 2}, {2, 2}}));
  // One GPU takes everything.
  EXPECT_EQ(layers_by_share(5, {7}), (Ranges{{0, 5}}));
}

GpuPlacementRequest two_gpus() {
  GpuPlacementRequest r;
  r.visible_gpus = 2;
  return r;
}

TEST(GpuSplit, FreeChoiceKeepsAModelThatFitsOnOneGpu) {
  GpuPlacementRequest r = two_gpus();
  r.gpu_bytes = {24 * kGiB, 24 * kGiB};
  r.model_bytes = 10 * kGiB;
  GpuPlacement p = place_on_gpus(r, 32);
  EXPECT_EQ(p.gpus, std::vector<int>{0});
  EXPECT_FALSE(p.pipeline());
  EXPECT_NE(p.reason.find("-sm layer"), std::string::npos) << p.reason;
  r.main_gpu = 1;  // -mg picks the one
  EXPECT_EQ(place_on_gpus(r, 32).gpus, std::vector<int>{1});
  // 95% of the card is the limit: 22.75 GiB of 24 fit, 23 do not.
  r.main_gpu.reset();
  r.model_bytes = 22 * kGiB + 3 * kGiB / 4;
  EXPECT_EQ(place_on_gpus(r, 32).gpus, std::vector<int>{0});
  r.model_bytes = 23 * kGiB;
  p = place_on_gpus(r, 32);
  EXPECT_EQ(p.gpus, (std::vector<int>{0, 1}));
  EXPECT_TRUE(p.layers.empty());  // the planner splits by the GPUs' memory
  // Memory unknown: one GPU, and the log says how to use all.
  r.gpu_bytes.clear();
  EXPECT_EQ(place_on_gpus(r, 32).gpus, std::vector<int>{0});
  // One GPU on the machine: that one, whatever the size.
  r = GpuPlacementRequest{};
  r.visible_gpus = 1;
  r.gpu_bytes = {8 * kGiB};
  r.model_bytes = 40 * kGiB;
  EXPECT_EQ(place_on_gpus(r, 32).gpus, std::vector<int>{0});
}

TEST(GpuSplit, ExplicitFlagsDecide) {
  GpuPlacementRequest r = two_gpus();
  r.gpu_bytes = {24 * kGiB, 24 * kGiB};
  r.model_bytes = kGiB;
  r.mode = SplitMode::Layer;  // -sm layer: all visible GPUs even for a small model
  EXPECT_EQ(place_on_gpus(r, 32).gpus, (std::vector<int>{0, 1}));
  r.mode = SplitMode::Auto;
  r.listed = {1, 0};  // a list: those GPUs in that order
  EXPECT_EQ(place_on_gpus(r, 32).gpus, (std::vector<int>{1, 0}));
  r.listed = {1};
  EXPECT_EQ(place_on_gpus(r, 32).gpus, std::vector<int>{1});
  r.listed = {2};
  EXPECT_THROW(place_on_gpus(r, 32), InvalidArgument);  // the machine shows 2
  r.listed.clear();
  r.mode = SplitMode::None;
  r.model_bytes = 100 * kGiB;  // -sm none: one GPU even when it does not fit (as llama.cpp)
  r.main_gpu = 1;
  EXPECT_EQ(place_on_gpus(r, 32).gpus, std::vector<int>{1});
  r.main_gpu = 2;
  EXPECT_THROW(place_on_gpus(r, 32), InvalidArgument);
}

TEST(GpuSplit, TensorSplitPlacesLayers) {
  GpuPlacementRequest r = two_gpus();
  r.tensor_split = {3, 1};
  GpuPlacement p = place_on_gpus(r, 32);
  EXPECT_EQ(p.gpus, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.layers, (Ranges{{0, 25}, {25, 32}}));
  r.tensor_split = {0, 1};  // only the second GPU
  p = place_on_gpus(r, 32);
  EXPECT_EQ(p.gpus, std::vector<int>{1});
  EXPECT_TRUE(p.layers.empty());
  r.tensor_split = {1};  // shares missing for later GPUs are zero
  EXPECT_EQ(place_on_gpus(r, 32).gpus, std::vector<int>{0});
  r.tensor_split = {1, 1, 1};
  EXPECT_THROW(place_on_gpus(r, 32), InvalidArgument);  // three shares, two GPUs
  r = GpuPlacementRequest{};
  r.visible_gpus = 3;
  r.listed = {2, 0};
  r.tensor_split = {1, 2};  // shares follow the listed order
  p = place_on_gpus(r, 6);
  EXPECT_EQ(p.gpus, (std::vector<int>{2, 0}));
  EXPECT_EQ(p.layers, (Ranges{{0, 3}, {3, 6}}));
}

TEST(GpuSplit, OneGpuPrograms) {
  GpuPlacementRequest r = two_gpus();
  EXPECT_EQ(one_gpu_device("cpu", r, 32, "pipellm"), "cpu");
  EXPECT_EQ(one_gpu_device("cuda", r, 32, "pipellm"), "cuda:0");
  EXPECT_EQ(one_gpu_device("cuda:1", r, 32, "pipellm"), "cuda:1");
  r.main_gpu = 1;
  EXPECT_EQ(one_gpu_device("cuda", r, 32, "pipellm"), "cuda:1");
  r.main_gpu.reset();
  r.tensor_split = {0, 1};
  EXPECT_EQ(one_gpu_device("cuda", r, 32, "pipellm"), "cuda:1");
  r.tensor_split = {1, 1};
  try {
    one_gpu_device("cuda", r, 32, "pipellm");
    FAIL() << "two GPUs accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("pipellm-coordinator"), std::string::npos) << e.what();
  }
  r.tensor_split.clear();
  EXPECT_THROW(one_gpu_device("cuda:0,cuda:1", r, 32, "pipellm"), InvalidArgument);
  r.mode = SplitMode::Layer;
  EXPECT_THROW(one_gpu_device("cuda", r, 32, "pipellm"), InvalidArgument);
}

TEST(GpuSplit, WrittenConfigReadsBack) {
  GpuPipelineSettings s;
  s.model = "/models/m.gguf";
  s.n_ctx = 8192;
  s.n_slots = 6;
  s.threads = 3;
  s.max_batch_tokens = 128;
  s.kv_type_k = KvType::Q8_0;
  s.kv_type_v = KvType::Q4_0;
  s.experts.cpu_moe = true;
  s.experts.n_cpu_moe = 7;
  s.experts.overrides = parse_tensor_overrides("blk\\.(1|2)\\.ffn_.*_exps=CPU,\"odd\": x=CUDA0");
  s.experts.cache_bytes = 3 * kGiB;
  s.cpu_rows = -1.0;  // auto
  GpuPlacement p;
  p.gpus = {1, 0};
  p.layers = {{0, 20}, {20, 32}};
  const PipelineConfig c = gpu_pipeline_config(s, p, {24 * kGiB, 12 * kGiB});
  const PipelineConfig back = PipelineConfig::parse(c.to_yaml(), "written", "/elsewhere");
  EXPECT_EQ(back.model, "/models/m.gguf");
  EXPECT_EQ(back.context_length, 8192);
  EXPECT_EQ(back.max_sequences, 6);
  EXPECT_EQ(back.micro_batches, 2);  // one per stage
  EXPECT_EQ(back.max_batch_tokens, 128);
  EXPECT_EQ(back.prefill_chunk, 128);  // no larger than a step
  EXPECT_EQ(back.threads, 3);
  EXPECT_EQ(back.kv_cache_type_k, KvType::Q8_0);
  EXPECT_EQ(back.kv_cache_type_v, KvType::Q4_0);
  EXPECT_EQ(back.transport, TransportKind::Auto);
  ASSERT_EQ(back.n_stages(), 2);
  EXPECT_EQ(back.stages[0].device, "cuda:1");
  EXPECT_EQ(back.stages[1].device, "cuda:0");
  EXPECT_EQ(back.stages[0].layers, std::make_pair(0, 20));
  EXPECT_EQ(back.stages[1].layers, std::make_pair(20, 32));
  EXPECT_EQ(back.stages[0].memory_bytes, 0u);  // explicit layers: no budget needed
  for (const StageSpec& st : back.stages) {
    EXPECT_TRUE(st.experts.cpu_moe);
    EXPECT_EQ(st.experts.n_cpu_moe, 7);
    ASSERT_EQ(st.experts.overrides.size(), 2u);
    EXPECT_EQ(st.experts.overrides[0].pattern, "blk\\.(1|2)\\.ffn_.*_exps");
    EXPECT_TRUE(st.experts.overrides[0].host);
    EXPECT_EQ(st.experts.overrides[1].pattern, "\"odd\": x");
    EXPECT_FALSE(st.experts.overrides[1].host);
    EXPECT_EQ(st.experts.cache_bytes, 3 * kGiB);
    EXPECT_EQ(st.cpu_rows, -1.0);
  }
  // Without -ts: each stage's budget is 95% of its GPU.
  p.layers.clear();
  s.experts = {};
  s.cpu_rows = 0.3;
  const PipelineConfig planned = PipelineConfig::parse(gpu_pipeline_config(s, p, {24 * kGiB, 12 * kGiB}).to_yaml(), "w", "");
  EXPECT_FALSE(planned.has_explicit_layers());
  EXPECT_EQ(planned.stages[0].memory_bytes, 12 * kGiB / 20 * 19);  // cuda:1
  EXPECT_EQ(planned.stages[1].memory_bytes, 24 * kGiB / 20 * 19);
  EXPECT_EQ(planned.stages[0].cpu_rows, 0.3);
  EXPECT_FALSE(planned.stages[0].experts.any());
}

}  // namespace
}  // namespace pipellm

// Expert placement (engine/model/expert_placement.h): llama.cpp's --cpu-moe, --n-cpu-moe and
// -ot REGEX=BUFFER resolved against the fixture models' tensor names. Expected layers are read off
// the flags by hand (first matching override wins, then --n-cpu-moe / --cpu-moe).
#include <gtest/gtest.h>

#include <functional>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/expert_placement.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

// The fixture's config with its layers repeated to `n_layer` (the fixtures have two).
ModelConfig config_of(const std::string& name, int n_layer = 4) {
  const auto f = GgufFile::open(test::model_path(name));
  ModelConfig c = ModelConfig::from_gguf(*f);
  while (static_cast<int>(c.layers.size()) < n_layer) c.layers.push_back(c.layers[c.layers.size() % 2]);
  c.n_layer = n_layer;
  return c;
}

std::vector<bool> placed(const ModelConfig& c, const std::string& ot, bool cpu_moe = false, int n_cpu_moe = 0) {
  ExpertPlacementFlags f;
  if (!ot.empty()) f.overrides = parse_tensor_overrides(ot);
  f.cpu_moe = cpu_moe;
  f.n_cpu_moe = n_cpu_moe;
  return host_expert_layers(c, f);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ExpertPlacement, ParsesOverrideLists) {
  const auto o = parse_tensor_overrides("blk\\.(0|1)\\.ffn=CUDA0,exps=cpu,attn=GPU");
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o[0].pattern, "blk\\.(0|1)\\.ffn");
  EXPECT_FALSE(o[0].host);
  EXPECT_TRUE(o[1].host);
  EXPECT_EQ(o[1].text, "exps=cpu");
  EXPECT_FALSE(o[2].host);
  EXPECT_NE(error_of([] { parse_tensor_overrides("exps"); }).find("'exps': expected PATTERN=BUFFER"), std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_overrides("=CPU"); }).find("pattern is empty"), std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_overrides("exps=Vulkan0"); }).find("'Vulkan0' is not CPU or CUDA<n>"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_overrides("ffn_(up=CPU"); }).find("not a regular expression"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_tensor_overrides("exps=CPU,"); }).find("''"), std::string::npos);
}

TEST(ExpertPlacement, CpuMoeAndNCpuMoe) {
  for (const char* name : {"tiny-qwen3moe-Q4_K_M", "tiny-gptoss-MXFP4_MOE", "tiny-llamamoe-Q4_K_M",
                           "tiny-gemma4moe-Q4_K_M"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = config_of(name);
    EXPECT_EQ(placed(c, ""), (std::vector<bool>{false, false, false, false}));
    EXPECT_EQ(placed(c, "", true), (std::vector<bool>{true, true, true, true}));
    EXPECT_EQ(placed(c, "", false, 3), (std::vector<bool>{true, true, true, false}));
    EXPECT_EQ(placed(c, "", false, 99), (std::vector<bool>{true, true, true, true}));
  }
}

TEST(ExpertPlacement, FirstMatchingOverrideWins) {
  const ModelConfig c = config_of("tiny-qwen3moe-Q4_K_M");
  // A GPU entry ahead of --cpu-moe keeps layer 1's experts on the card.
  EXPECT_EQ(placed(c, "blk\\.1\\.=CUDA0", true), (std::vector<bool>{true, false, true, true}));
  EXPECT_EQ(placed(c, "blk\\.[23]\\.ffn_.*_exps=CPU"), (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(placed(c, "exps=CPU"), (std::vector<bool>{true, true, true, true}));
  // The override decides before --n-cpu-moe.
  EXPECT_EQ(placed(c, "blk\\.0\\.=GPU,blk\\.3\\.ffn_(gate|up|down)_exps=CPU", false, 2),
            (std::vector<bool>{false, true, false, true}));
}

TEST(ExpertPlacement, BiasesFollowTheirMatrices) {
  // gpt-oss's expert stacks have biases: "exps.weight" matches only the matrices.
  const ModelConfig c = config_of("tiny-gptoss-MXFP4_MOE");
  EXPECT_EQ(placed(c, "exps\\.weight=CPU"), (std::vector<bool>{true, true, true, true}));
}

TEST(ExpertPlacement, RefusesWhatItCannotPlace) {
  const ModelConfig moe = config_of("tiny-qwen3moe-Q4_K_M");
  const std::string other = error_of([&] { placed(moe, "attn_q=CPU"); });
  EXPECT_NE(other.find("'attn_q=CPU' puts blk.0.attn_q.weight in host memory"), std::string::npos) << other;
  EXPECT_NE(error_of([&] { placed(moe, "output=CPU"); }).find("output.weight"), std::string::npos);
  const std::string split = error_of([&] { placed(moe, "blk\\.2\\.ffn_gate_exps=CPU"); });
  EXPECT_NE(split.find("blk.2.ffn_gate_exps.weight would be on the CPU but blk.2.ffn_up_exps.weight on the GPU"),
            std::string::npos)
      << split;
  // A dense model has no experts: --cpu-moe changes nothing (as llama.cpp), -ot on its FFN is refused.
  const ModelConfig dense = config_of("tiny-llama-Q4_K_M");
  EXPECT_EQ(placed(dense, "", true), (std::vector<bool>{false, false, false, false}));
  EXPECT_NE(error_of([&] { placed(dense, "ffn=CPU"); }).find("'ffn=CPU' puts blk.0.ffn_"), std::string::npos);
}

TEST(ExpertPlacement, Describes) {
  EXPECT_EQ(describe_host_experts({false, false}), "");
  EXPECT_EQ(describe_host_experts({true, true, true, false, true}),
            "experts of 4 layers (0-2, 4) in host memory, computed on the CPU");
  EXPECT_EQ(describe_host_experts({false, true}), "experts of 1 layer (1) in host memory, computed on the CPU");
}

}  // namespace
}  // namespace pipellm

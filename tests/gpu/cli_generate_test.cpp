// `pipellm generate --device cuda --temp 0 --print-ids` (prefill, then the graph-replayed decode
// path with GPU sampling) against the CPU engine's ids and llama.cpp's greedy continuation, up to
// the first step whose reference top-1/top-2 gap is under 0.1 (past a near tie the engines may
// legitimately part). Also with --no-graphs (the same path, eager launches).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

struct CliRun {
  int code;
  std::vector<int32_t> ids;
};

CliRun generate(const std::string& model, const std::string& prompt_file, int n, const std::string& extra) {
  const std::string cmd = std::string(PIPELLM_CLI_PATH) + " generate -m " + model + " --ids-file " + prompt_file +
                          " --print-ids --temp 0 --ignore-eos --threads 4 --ctx 256 -n " + std::to_string(n) + " " +
                          extra + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return {-1, {}};
  std::string out;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  const int status = pclose(p);
  CliRun r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, {}};
  std::istringstream in(out);
  int32_t v;
  while (in >> v) r.ids.push_back(v);
  return r;
}

TEST(CudaCli, GenerateGreedyIdsMatchCpuAndReference) {
  PIPELLM_REQUIRE_GPU();
  for (const std::string name : {"tiny-tied-Q4_K_M", "tiny-tied-Q8_0", "tiny-qwen3-Q4_K_M", "tiny-llama-Q5_1",
                                 "tiny-qwen2-Q4_K_M"}) {
    const std::string model = test::model_path(name);
    const std::string prompt = test::testdata("ref/" + name + ".tokens");
    const auto ref = test::read_greedy(test::testdata("ref/" + name + ".greedy"));
    const int n = static_cast<int>(ref.ids.size());
    size_t firm = 0;  // leading steps whose reference gap is >= 0.1
    while (firm < ref.ids.size() && ref.gaps[firm] >= 0.1) ++firm;
    const CliRun cpu = generate(model, prompt, n, "--device cpu");
    const CliRun gpu = generate(model, prompt, n, "--device cuda");
    const CliRun eager = generate(model, prompt, n, "--device cuda --no-graphs");
    ASSERT_EQ(cpu.code, 0) << name;
    ASSERT_EQ(gpu.code, 0) << name;
    ASSERT_EQ(eager.code, 0) << name;
    ASSERT_EQ(static_cast<int>(cpu.ids.size()), n) << name;
    ASSERT_EQ(static_cast<int>(gpu.ids.size()), n) << name;
    ASSERT_EQ(static_cast<int>(eager.ids.size()), n) << name;
    for (size_t i = 0; i < firm; ++i) {
      EXPECT_EQ(cpu.ids[i], ref.ids[i]) << name << " step " << i << " (CPU vs reference)";
      EXPECT_EQ(gpu.ids[i], cpu.ids[i]) << name << " step " << i << " (CUDA vs CPU)";
      EXPECT_EQ(eager.ids[i], cpu.ids[i]) << name << " step " << i << " (CUDA --no-graphs vs CPU)";
    }
    EXPECT_EQ(gpu.ids, eager.ids) << name << ": graph replay and eager launches sample the same ids";
    std::printf("[ %s ] generate --device cuda == CPU == reference over the %zu firm steps of %d\n", name.c_str(),
                firm, n);
  }
}

TEST(CudaCli, VramBudgetStreamsLayersAndKeepsTheIds) {
  PIPELLM_REQUIRE_GPU();
  // tiny-llama-Q8_0 at --ctx 256: two layers of 0.8 MB, so 2.6 MB for weights + ring + KV keeps at
  // most one layer resident and streams the rest through the staging ring.
  const std::string name = "tiny-llama-Q8_0";
  const std::string model = test::model_path(name);
  const std::string prompt = test::testdata("ref/" + name + ".tokens");
  const CliRun resident = generate(model, prompt, 16, "--device cuda");
  const CliRun streamed = generate(model, prompt, 16, "--device cuda --vram-budget 2600000");
  const CliRun too_small = generate(model, prompt, 16, "--device cuda --vram-budget 100000");
  ASSERT_EQ(resident.code, 0);
  ASSERT_EQ(streamed.code, 0);
  EXPECT_EQ(streamed.ids, resident.ids);
  EXPECT_NE(too_small.code, 0) << "a budget below the minimum must be refused";
}

}  // namespace
}  // namespace pipellm

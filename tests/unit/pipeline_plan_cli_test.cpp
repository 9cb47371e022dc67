// `pipellm plan --config X`: prints the split, refuses an impossible one with the reason, and
// what each kind of layer keeps per sequence (checked on the hybrid fixtures, by hand from their
// shapes in shared/fixtures/next/README.md).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

std::pair<int, std::string> plan(const std::string& yaml) {
  const auto path = std::filesystem::temp_directory_path() / ("pipellm-plan-" + std::to_string(getpid()) + ".yaml");
  std::ofstream(path) << yaml;
  const std::string cmd = std::string(PIPELLM_CLI_PATH) + " plan --config " + path.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p != nullptr && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = p != nullptr ? pclose(p) : -1;
  std::filesystem::remove(path);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(PipelinePlanCli, PrintsTheSplit) {
  const auto [rc, out] = plan("model: " + test::model_path("tiny-llama-Q8_0") +
                              "\nstages:\n  - {device: cpu, memory: 1GiB}\n  - {device: cpu, memory: 1GiB}\n");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("0      [0, 1)       E"), std::string::npos) << out;
  EXPECT_NE(out.find("1      [1, 2)       O"), std::string::npos) << out;
  EXPECT_NE(out.find("headroom"), std::string::npos) << out;
}

TEST(PipelinePlanCli, RefusesAnImpossiblePlan) {
  const auto [rc, out] = plan("model: " + test::model_path("tiny-llama-Q8_0") +
                              "\nscratch: 0\nstages:\n  - {device: cpu, memory: 600KiB}\n  - {device: cpu}\n");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("stage 0 cannot hold even one layer"), std::string::npos) << out;
}

// A KV cache no machine holds (2 layers x 512 bytes x 2^24 positions x 2^16 sequences, 1.1 PB) is
// refused by name, as the coordinator refuses it, instead of being planned (issue 21 item 10).
TEST(PipelinePlanCli, RefusesAKvCacheBeyondThisMachinesMemory) {
  const auto [rc, out] = plan("model: " + test::model_path("tiny-llama-Q8_0") +
                              "\ncontext_length: 16777216\nmax_sequences: 65536\nstages:\n  - {device: cpu}\n");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("for its KV cache"), std::string::npos) << out;
  EXPECT_NE(out.find("of memory"), std::string::npos) << out;
}

TEST(PipelinePlanCli, ConfigErrorIsAUsageError) {
  const auto [rc, out] = plan("model: x.gguf\nstages: [{device: tpu}]\n");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find(":2: stages[0].device: 'tpu' is not cpu or cuda:N"), std::string::npos) << out;
}

// The numbers of one kind's row of the table: layers, KV/token, rows/seq, per sequence.
std::vector<std::string> kind_row(const std::string& out, const std::string& kind) {
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(kind + " ", 0) != 0) continue;
    std::istringstream fields(line.substr(kind.size()));
    std::vector<std::string> v;
    std::string f;
    while (v.size() < 4 && fields >> f) v.push_back(f);
    return v;
  }
  return {};
}

std::string hybrid_config(const std::string& model) {
  return "model: " + test::model_path(model) +
         "\ncontext_length: 4096\nmax_sequences: 2\nstages:\n  - {device: cpu, memory: 1GiB}\n";
}

using Row = std::vector<std::string>;

// tiny-qwen35moe: layers 0 and 2 are DeltaNet, 1 and 3 attention with one KV head of 64.
TEST(PipelinePlanCli, ReportsTheRecurrentStatePerSequence) {
  const auto [rc, out] = plan(hybrid_config("tiny-qwen35moe-Q4_K_M"));
  ASSERT_EQ(rc, 0) << out;
  // K and V of 64 in f16 per attention layer: 2 x 64 x 2 B = 256 B a position, 2 layers.
  EXPECT_EQ(kind_row(out, "full"), (Row{"2", "512", "4096", std::to_string(512 * 4096)})) << out;
  // Per DeltaNet layer: 4 value heads of 32 x 32 floats, and the conv's 3 previous inputs of
  // 2 * 2 * 32 + 4 * 32 = 256 channels: (4096 + 768) x 4 B = 19456 B.
  EXPECT_EQ(kind_row(out, "recurrent"), (Row{"2", "-", "-", "38912"})) << out;
  EXPECT_NE(out.find("recurrent state per sequence: 38912 B (38.0 KiB) in 2 layers"), std::string::npos) << out;
  EXPECT_NE(out.find("76.0 KiB  fixed state"), std::string::npos) << out;  // 2 sequences
  EXPECT_TRUE(kind_row(out, "sliding ring").empty()) << out;
  EXPECT_TRUE(kind_row(out, "shared").empty()) << out;
}

// tiny-gemma4: S G S G | G S S G, the last four sharing the caches of layers 2 (sliding) and 3
// (global); sliding layers have 2 KV heads of 64, global ones 1 of 128, window 16.
TEST(PipelinePlanCli, ReportsKvPerKindOfLayer) {
  const auto [rc, out] = plan(hybrid_config("tiny-gemma4-Q4_K_M"));
  ASSERT_EQ(rc, 0) << out;
  // Layers 1 and 3: 2 x 128 x 2 B = 512 B a position each, the whole context.
  EXPECT_EQ(kind_row(out, "full"), (Row{"2", "1024", "4096", std::to_string(1024 * 4096)})) << out;
  // Layers 0 and 2: 2 x 2 x 64 x 2 B = 512 B each, a ring of 16 + 512 - 1 positions.
  EXPECT_EQ(kind_row(out, "sliding ring"), (Row{"2", "1024", "527", std::to_string(1024 * 527)})) << out;
  EXPECT_EQ(kind_row(out, "shared"), (Row{"4", "-", "-", "0"})) << out;
  EXPECT_NE(out.find("no cache of their own: read layers 2, 3"), std::string::npos) << out;
  EXPECT_TRUE(kind_row(out, "recurrent").empty()) << out;
  EXPECT_EQ(out.find("recurrent state per sequence"), std::string::npos) << out;
}

}  // namespace
}  // namespace pipellm

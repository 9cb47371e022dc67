// `pipellm plan --config X`: prints the split, refuses an impossible one with the reason.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

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

TEST(PipelinePlanCli, ConfigErrorIsAUsageError) {
  const auto [rc, out] = plan("model: x.gguf\nstages: [{device: tpu}]\n");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find(":2: stages[0].device: 'tpu' is not cpu or cuda:N"), std::string::npos) << out;
}

}  // namespace
}  // namespace pipellm

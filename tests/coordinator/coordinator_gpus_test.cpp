// pipellm-coordinator -m M over several GPUs (coordinator/served_gpus.h): it writes the stages'
// config and launches `mpirun -np N pipellm-stage --config that-file`. No GPU is needed: the
// machine is told it has two (CUDA_VISIBLE_DEVICES=0,1) and mpirun is a script that records what
// it was given, so the test reads the very file the stages would have read, with the stages'
// own parser and `pipellm plan`. Flags that only the in-process engine takes are refused by name
// before anything is launched.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "engine/pipeline/pipeline_config.h"
#include "tests/coordinator/coordinator_process.h"

namespace pipellm::test {
namespace {

const std::string kModel = model_path("tiny-gemma3-Q4_K_M");  // 6 layers
const std::vector<std::string> kTwoGpus = {"CUDA_VISIBLE_DEVICES=0,1"};

// An mpirun that copies its argument list and the --config file into `dir`, then fails.
std::string recording_mpirun(const TempDir& dir) {
  const std::string path = dir.file("mpirun");
  std::ofstream(path) << "#!/bin/sh\n"
                      << "out='" << dir.path() << "'\n"
                      << "printf '%s\\n' \"$@\" > \"$out/argv.tmp\" && mv \"$out/argv.tmp\" \"$out/argv\"\n"
                      << "while [ $# -gt 0 ]; do\n"
                      << "  if [ \"$1\" = --config ]; then cp \"$2\" \"$out/config.tmp\" && mv \"$out/config.tmp\" "
                         "\"$out/config.yaml\"; fi\n"
                      << "  shift\n"
                      << "done\n"
                      << "exit 3\n";
  ::chmod(path.c_str(), 0755);
  return path;
}

bool wait_for_file(const std::string& path, int timeout_ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string run_output(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// The config and argument list the coordinator handed to mpirun for `flags`.
struct Launch {
  PipelineConfig config;
  std::string argv;
  std::string log;
  std::string config_path;
};

Launch launch_over_gpus(const TempDir& dir, std::vector<std::string> flags) {
  flags.insert(flags.end(), {"--model", kModel, "--mpirun", recording_mpirun(dir), "--http-listen", "off"});
  CoordinatorProcess c(flags, kTwoGpus);
  Launch l;
  l.config_path = dir.file("config.yaml");
  EXPECT_TRUE(wait_for_file(dir.file("argv"), 30000)) << "mpirun was not started\n" << c.log();
  EXPECT_TRUE(wait_for_file(l.config_path, 5000)) << c.log();
  l.argv = read_all(dir.file("argv"));
  l.log = c.log();
  l.config = PipelineConfig::load(l.config_path);
  return l;
}

TEST(GpuPipeline, ListedGpusGetAStageEachFromAWrittenConfig) {
  TempDir dir;
  // -c 768 shared by --parallel 3 (llama-server's meaning): 256 positions per sequence.
  const Launch l = launch_over_gpus(dir, {"--device", "CUDA0,CUDA1", "-c", "768", "--parallel", "3", "-ctk", "q8_0", "-t", "2"});
  EXPECT_NE(l.log.find("coordinator: GPUs: layers split over cuda:0, cuda:1 (--device)"), std::string::npos) << l.log;
  EXPECT_NE(l.argv.find("-np\n2\n"), std::string::npos) << l.argv;
  const PipelineConfig& c = l.config;
  EXPECT_EQ(c.model, kModel);
  EXPECT_EQ(c.context_length, 256);
  EXPECT_EQ(c.max_sequences, 3);
  EXPECT_EQ(c.micro_batches, 2);
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.kv_cache_type_k, KvType::Q8_0);
  EXPECT_EQ(c.kv_cache_type_v, KvType::F16);
  EXPECT_EQ(c.transport, TransportKind::Auto);  // NCCL between GPU stages
  ASSERT_EQ(c.n_stages(), 2);
  EXPECT_EQ(c.stages[0].device, "cuda:0");
  EXPECT_EQ(c.stages[1].device, "cuda:1");
  EXPECT_FALSE(c.has_explicit_layers());  // the planner splits
  // `pipellm plan` reads the same file: the planner gives each GPU three of the six layers.
  const std::string plan = run_output("CUDA_VISIBLE_DEVICES=0,1 " + std::string(PIPELLM_CLI_BIN) + " plan --config " + l.config_path + " 2>&1");
  EXPECT_NE(plan.find("rank 0: cuda:0"), std::string::npos) << plan;
  EXPECT_NE(plan.find("rank 1: cuda:1"), std::string::npos) << plan;
}

TEST(GpuPipeline, TensorSplitGivesLlamaCppsLayerRanges) {
  TempDir dir;
  // 6 layers, shares 1:2: layer i goes to the first GPU while i / 7 < 1/3, i.e. layers 0-2.
  const Launch l = launch_over_gpus(dir, {"--device", "cuda", "-ngl", "99", "-ts", "1,2", "--cpu-moe"});
  ASSERT_EQ(l.config.n_stages(), 2);
  EXPECT_EQ(l.config.stages[0].layers, std::make_pair(0, 3));
  EXPECT_EQ(l.config.stages[1].layers, std::make_pair(3, 6));
  EXPECT_TRUE(l.config.stages[0].experts.cpu_moe);
  EXPECT_TRUE(l.config.stages[1].experts.cpu_moe);
  EXPECT_NE(l.log.find("by -ts"), std::string::npos) << l.log;
}

TEST(GpuPipeline, InProcessOnlyFlagsAndMissingGpusAreRefused) {
  const std::vector<std::string> two = {"--model", kModel, "--device", "cuda:0,cuda:1", "--http-listen", "off"};
  const auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), two.begin(), two.end());
    return extra;
  };
  expect_refused(run_coordinator_to_exit(with({"-ngl", "4"}), kTwoGpus), "-ngl 4 (layers streamed) runs the in-process engine");
  expect_refused(run_coordinator_to_exit(with({"--no-graphs"}), kTwoGpus), "--no-graphs runs the in-process engine");
  expect_refused(run_coordinator_to_exit(with({"--backend", "inprocess"}), kTwoGpus), "--backend inprocess runs");
  expect_refused(run_coordinator_to_exit(with({"-ts", "1,1,1"}), kTwoGpus), "3 shares for 2 GPU(s)");
  expect_refused(run_coordinator_to_exit(with({}), {"CUDA_VISIBLE_DEVICES=0"}), "cuda:1: this machine shows 1 GPU(s)");
  expect_refused(run_coordinator_to_exit(with({"--mpirun", "/nonexistent/mpirun"}), kTwoGpus),
                 "under '/nonexistent/mpirun', which is not installed here");
  expect_refused(run_coordinator_to_exit({"--model", kModel, "-sm", "row"}), "tensor parallelism");
}

}  // namespace
}  // namespace pipellm::test

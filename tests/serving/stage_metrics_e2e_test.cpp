// Per-stage figures on GET /metrics from a real two-rank pipeline: pipellm-coordinator
// launches `mpirun -np 2 pipellm-stage` (CPU ranks, one layer each); after a request, both
// ranks' step time (and rank 0's transfer time) are on the page, parsed from the text format.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

constexpr const char* kModel = "tiny-llama-Q8_0";

bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

// Every sample line of a Prometheus page: `name{labels}` -> value.
std::map<std::string, double> parse_samples(const std::string& page) {
  std::map<std::string, double> v;
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    if (sp == std::string::npos) {
      ADD_FAILURE() << "not a sample: " << line;
      continue;
    }
    v[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return v;
}

// A fresh directory for the pipeline config.
std::string srv_dir() {
  const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
  const auto d = std::filesystem::temp_directory_path() / ("pipellm_stage_metrics_" + std::to_string(stamp));
  std::filesystem::create_directories(d);
  return d.string();
}

std::string series(const std::string& name, int stage) {
  return name + "{stage=\"" + std::to_string(stage) + "\",device=\"cpu\"}";
}

TEST(StageMetrics, TwoRankPipelineReportsEveryStage) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found";
  const std::string dir = srv_dir();
  const std::string cfg = dir + "/two.yaml";
  std::ofstream(cfg) << "model: " << model_path(kModel) << "\ncontext_length: 256\nmax_sequences: 2\n"
                     << "micro_batches: 2\nthreads: 1\ntransport: mpi\nstages:\n  - device: cpu\n  - device: cpu\n";
  ServingProcess srv({"--config", cfg, "--backend", "mpirun", "--stage-bin", PIPELLM_STAGE_BIN});
  auto c = srv.http();
  c->set_read_timeout(60, 0);

  auto before = c->Get("/metrics");
  ASSERT_TRUE(before);
  const auto b = parse_samples(before->body);
  EXPECT_EQ(b.count(series("pipellm_stage_step_seconds", 1)), 0u) << "no step has run yet";

  const nlohmann::json body = {{"prompt", "stage metrics"}, {"max_tokens", 8}};
  auto r = c->Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;

  // The head reports at most every 250 ms; wait (bounded) for the figures of the last steps.
  std::map<std::string, double> v;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto m = c->Get("/metrics");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->status, 200);
    v = parse_samples(m->body);
    const auto s0 = v.find(series("pipellm_stage_step_seconds", 0));
    const auto s1 = v.find(series("pipellm_stage_step_seconds", 1));
    if (s0 != v.end() && s1 != v.end() && s0->second > 0 && s1->second > 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL() << "no step time for both stages within 10 s:\n" << m->body << "\ncoordinator log:\n" << srv.log();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_LT(v[series("pipellm_stage_step_seconds", 0)], 10.0);  // a per-step mean, not a total
  EXPECT_LT(v[series("pipellm_stage_step_seconds", 1)], 10.0);
  // Rank 0 sends activations every step; every rank has a transfer series.
  EXPECT_GT(v[series("pipellm_stage_transfer_seconds", 0)], 0.0);
  EXPECT_TRUE(v.count(series("pipellm_stage_transfer_seconds", 1)));
  // CPU stages report no GPU memory.
  EXPECT_EQ(v.count(series("pipellm_stage_gpu_memory_bytes", 0)), 0u);
  EXPECT_EQ(v.count(series("pipellm_stage_gpu_memory_bytes", 1)), 0u);
  EXPECT_EQ(v.count(series("pipellm_stage_step_seconds", 2)), 0u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pipellm::test

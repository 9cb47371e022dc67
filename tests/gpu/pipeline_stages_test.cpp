// CUDA stages under the pipeline runtime, in one process: a model split into two or three
// CudaStages (first, middle, tail) on one GPU, run by StageRunner over the in-process transport.
// Graph-replayed decode steps equal eager ones per stage (ids, and every stage captured graphs),
// and the split pipeline gives the ids of the whole model in one stage, greedy and with seeded
// sampling; greedy ids equal the CPU reference loop where the CPU logits are decisive.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>
#include <thread>

#include "engine/cpu/cpu_model.h"
#include "engine/cuda/cuda_stage.h"
#include "engine/gguf/gguf_file.h"
#include "engine/pipeline/inproc_transport.h"
#include "engine/pipeline/scheduler.h"
#include "engine/pipeline/stage_runner.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/reference_generate.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

constexpr int kCtx = 256;
constexpr int kSlots = 4;

std::vector<Request> requests(int n_vocab) {
  std::vector<Request> rs;
  for (int i = 0; i < 4; ++i) {
    Request r;
    r.id = i + 1;
    for (int k = 0; k < 5 + 3 * i; ++k) r.prompt.push_back((17 * (i + 1) + 31 * k) % n_vocab);
    r.max_new_tokens = 24;
    if (i >= 2) {  // seeded sampling with penalties: same settings, same device random stream
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 30;
      r.sampling.top_p = 0.9f;
      r.sampling.repeat_penalty = 1.2f;
      r.sampling.presence_penalty = 0.3f;
      r.sampling.seed = 7 + static_cast<uint64_t>(i);
    }
    rs.push_back(r);
  }
  return rs;
}

// Runs the requests through `bounds.size() - 1` CUDA stages (layers [bounds[i], bounds[i+1])).
std::map<int64_t, std::vector<int32_t>> run_pipeline(const std::string& path, const std::vector<int>& bounds, bool graphs,
                                                     std::vector<size_t>* graphs_captured = nullptr) {
  auto file = GgufFile::open(path);
  const ModelConfig c = ModelConfig::from_gguf(*file);
  const int n = static_cast<int>(bounds.size()) - 1;
  std::vector<std::unique_ptr<cuda::CudaStage>> stages;
  for (int r = 0; r < n; ++r) {
    const bool first = r == 0, last = r == n - 1;
    const ModelWeights w = ModelWeights::load(*file, c, {bounds[r], bounds[r + 1]}, first, last);
    cuda::CudaStageOptions o;
    o.n_ctx = kCtx;
    o.n_slots = kSlots;
    o.max_batch_tokens = 32;
    o.use_graphs = graphs;
    stages.push_back(std::make_unique<cuda::CudaStage>(c, w, first, last, o));
  }
  InprocHub hub(n);
  std::vector<std::unique_ptr<InprocTransport>> ts;
  for (int r = 0; r < n; ++r) ts.push_back(std::make_unique<InprocTransport>(hub, r));
  std::vector<std::thread> followers;
  for (int r = 1; r < n; ++r) {
    followers.emplace_back([&, r] { StageRunner(*stages[r], *ts[r]).run_follower(); });
  }
  SchedulerOptions so;
  so.n_slots = kSlots;
  so.n_ctx = kCtx;
  so.micro_batches = n;
  so.max_batch_tokens = 32;
  so.prefill_chunk = 8;
  Scheduler sched(so);
  for (const Request& r : requests(c.n_vocab)) sched.submit(r);
  std::map<int64_t, std::vector<int32_t>> out;
  StageRunner(*stages[0], *ts[0]).run_head(sched, [&](const TokenEvent& e) { out[e.seq_id].push_back(e.token); });
  for (auto& t : followers) t.join();
  if (graphs_captured) {
    for (const auto& s : stages) graphs_captured->push_back(s->graphs_captured());
  }
  return out;
}

// Even splits of the model's layers into n stages.
std::vector<int> split(int n_layer, int n) {
  std::vector<int> b;
  for (int r = 0; r <= n; ++r) b.push_back(r * n_layer / n);
  return b;
}

TEST(CudaPipelineStages, GraphsEqualEagerAndSeveralStagesEqualOne) {
  PIPELLM_REQUIRE_GPU();
  // The fixtures have two layers (two stages); the default model has six (three stages).
  const std::vector<std::pair<std::string, int>> models = {
      {test::model_path("tiny-llama-Q4_K_M"), 2},
      {test::model_path("tiny-qwen3-Q8_0"), 2},
      {std::string(PIPELLM_SOURCE_DIR) + "/models/default.gguf", 3}};
  for (const auto& [path, n] : models) {
    const int L = ModelConfig::from_gguf(*GgufFile::open(path)).n_layer;
    ASSERT_GE(L, n) << path;
    std::vector<size_t> captured;
    const auto g = run_pipeline(path, split(L, n), true, &captured);
    const auto e = run_pipeline(path, split(L, n), false);
    const auto one = run_pipeline(path, split(L, 1), true);
    ASSERT_EQ(captured.size(), static_cast<size_t>(n));
    for (size_t r = 0; r < captured.size(); ++r) EXPECT_GT(captured[r], 0u) << path << " stage " << r;
    EXPECT_EQ(g, e) << path << ": graph replay vs eager, " << n << " stages";
    EXPECT_EQ(g, one) << path << ": " << n << " stages vs one";
    ASSERT_EQ(g.size(), 4u) << path;
  }
}

TEST(CudaPipelineStages, GreedyIdsMatchTheCpuReferenceLoop) {
  PIPELLM_REQUIRE_GPU();
  const std::string name = "tiny-llama-F16";
  const std::string path = test::model_path(name);
  const int L = ModelConfig::from_gguf(*GgufFile::open(path)).n_layer;
  const auto got = run_pipeline(path, {0, L / 2, L}, true);
  CpuModelOptions opt;
  opt.stage.n_ctx = kCtx;
  auto cpu = CpuModel::open(path, opt);
  for (const Request& r : requests(cpu->config().n_vocab)) {
    if (r.sampling.temperature > 0.0f) continue;
    const auto want = test::reference_generate(cpu->stage(), r.prompt, r.max_new_tokens, r.sampling, 8);
    // Quantized GPU and CPU products round differently: compare up to the first near tie.
    const auto& g = got.at(r.id);
    size_t same = 0;
    while (same < want.size() && same < g.size() && want[same] == g[same]) ++same;
    EXPECT_GE(same, 8u) << name << " request " << r.id;
  }
}

}  // namespace
}  // namespace pipellm

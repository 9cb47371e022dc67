// End to end with real pipeline stages: pipellm-coordinator launches `mpirun -np N
// pipellm-stage` (CPU ranks) and serves 16 concurrent streaming clients (greedy and seeded
// sampling with every sampling parameter); each gets the single-process reference's tokens and
// `pipellm generate`'s, on 1, 2 (one layer each) and 3 ranks (a planned split of a 4-layer
// model; the 2-layer fixture with a head-only tail); seeded sampling is reproducible, a stop id
// ends a request like the in-process backend does, and a cancelled stream frees its slot.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>
#include <utility>

#include "tests/coordinator/coordinator_process.h"
#include "tests/coordinator/serving_cases.h"

namespace pipellm::test {
namespace {

namespace v1 = pipellm::v1;
constexpr const char* kModel = "tiny-llama-Q8_0";
constexpr int kCtx = 512;

// `ranks` CPU ranks (explicit layer ranges when given), 4 KV slots, one micro-batch per rank.
std::string rank_config(const TempDir& dir, const std::string& name, const std::string& model, int ranks,
                        const std::vector<std::pair<int, int>>& layers = {}) {
  const std::string cfg = dir.file(name);
  std::ofstream out(cfg);
  out << "model: " << model << "\ncontext_length: " << kCtx << "\nmax_sequences: 4\nmicro_batches: " << ranks
      << "\nthreads: 1\ntransport: mpi\nstages:\n";
  for (size_t i = 0; i < static_cast<size_t>(ranks); ++i) {
    out << "  - device: cpu\n";
    if (!layers.empty()) out << "    layers: [" << layers[i].first << ", " << layers[i].second << "]\n";
  }
  return cfg;
}

// The coordinator over `mpirun pipellm-stage --config cfg` (2 ms per step, so that streams
// overlap), once it is SERVING.
std::unique_ptr<CoordinatorProcess> serve_stages(const std::string& cfg) {
  auto c = std::make_unique<CoordinatorProcess>(std::vector<std::string>{
      "--config", cfg, "--backend", "mpirun", "--stage-bin", PIPELLM_STAGE_BIN, "--stage-arg=--debug-step-delay-ms",
      "--stage-arg=2", "--max-queue", "64"});
  if (!c->wait_health("SERVING", 60000)) {
    ADD_FAILURE() << "the stages did not come up\n" << c->log();
    return nullptr;
  }
  return c;
}

v1::ModelInfo info_of(CoordinatorProcess& c) {
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  EXPECT_TRUE(c.stub().GetModelInfo(&ctx, v1::ModelInfoRequest{}, &info).ok());
  return info;
}

class MpiServing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_mpirun()) return;
    dir_ = new TempDir;
    coord_ = serve_stages(rank_config(*dir_, "two.yaml", model_path(kModel), 2)).release();
  }
  static void TearDownTestSuite() {
    delete coord_;
    delete dir_;
    coord_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!have_mpirun()) GTEST_SKIP() << "mpirun not found";
    ASSERT_NE(coord_, nullptr) << "the two-rank coordinator did not start";
  }
  static TempDir* dir_;
  static CoordinatorProcess* coord_;
};
TempDir* MpiServing::dir_ = nullptr;
CoordinatorProcess* MpiServing::coord_ = nullptr;

TEST_F(MpiServing, InfoShowsTheTwoStagePlan) {
  const auto info = info_of(*coord_);
  EXPECT_EQ(info.n_stages(), 2);
  EXPECT_EQ(info.plan(), "rank0:[0,1) rank1:[1,2)");
  EXPECT_EQ(info.max_sequences(), 4);
  EXPECT_EQ(info.context_length(), kCtx);
}

TEST_F(MpiServing, ConcurrentStreamsMatchTheSingleProcessEngine) {
  expect_concurrent_streams_match(*coord_, model_path(kModel), kCtx);
}

TEST_F(MpiServing, EndOfGenerationCountsLikeTheInProcessBackend) {
  // Without ignore_eos the tokenizer's end-of-generation ids stop a request: the stop id is not
  // streamed and not counted, as with the in-process backend (same prompt, same answer).
  Case c{"1 2 3", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0, 100};  // the tiny model ends this one early
  auto req = request_of(c);
  req.set_ignore_eos(false);
  const auto mpi = generate(coord_->stub(), req);
  ASSERT_TRUE(mpi.status.ok()) << mpi.status.error_message();
  EXPECT_EQ(mpi.final.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_LT(mpi.ids.size(), 100u);
  CoordinatorProcess local({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", std::to_string(kCtx),
                            "--slots", "1", "--threads", "1"});
  ASSERT_TRUE(local.wait_health("SERVING", 30000)) << local.log();
  const auto one = generate(local.stub(), req);
  ASSERT_TRUE(one.status.ok()) << one.status.error_message();
  EXPECT_EQ(mpi.ids, one.ids);
  EXPECT_EQ(mpi.final.finish_reason(), one.final.finish_reason());
  EXPECT_EQ(mpi.final.usage().generated_tokens(), one.final.usage().generated_tokens());
  EXPECT_EQ(mpi.final.usage().generated_tokens(), static_cast<int>(mpi.ids.size()));
}

TEST_F(MpiServing, CancellationFreesTheSlot) {
  // Four long streams hold the four slots; cancelling one lets a fifth request run at once.
  auto long_req = request_of({"a long story", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0, 400});
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < 4; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    ctxs.back()->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    readers.push_back(coord_->stub().Generate(ctxs.back().get(), long_req));
  }
  v1::GenerateResponse m;
  for (auto& r : readers) {
    for (int k = 0; k < 2; ++k) ASSERT_TRUE(r->Read(&m));
  }
  ctxs[0]->TryCancel();
  while (readers[0]->Read(&m)) {
  }
  EXPECT_EQ(readers[0]->Finish().error_code(), grpc::StatusCode::CANCELLED);
  const auto small = generate(coord_->stub(), request_of({"short", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0, 4}), 20000);
  EXPECT_TRUE(small.status.ok()) << small.status.error_message();
  EXPECT_EQ(small.ids.size(), 4u);
  for (int i = 1; i < 4; ++i) {
    EXPECT_TRUE(readers[static_cast<size_t>(i)]->Read(&m)) << "stream " << i << " ended before the small request";
    ctxs[static_cast<size_t>(i)]->TryCancel();
    while (readers[static_cast<size_t>(i)]->Read(&m)) {
    }
    readers[static_cast<size_t>(i)]->Finish();
  }
}

// The same 16 streams through one rank and through three (the two-rank case is MpiServing's).
class MpiServingRanks : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_mpirun()) GTEST_SKIP() << "mpirun not found";
  }
  TempDir dir_;
};

TEST_F(MpiServingRanks, OneRank) {
  auto coord = serve_stages(rank_config(dir_, "one.yaml", model_path(kModel), 1));
  ASSERT_NE(coord, nullptr);
  const auto info = info_of(*coord);
  EXPECT_EQ(info.n_stages(), 1);
  EXPECT_EQ(info.plan(), "rank0:[0,2)");
  expect_concurrent_streams_match(*coord, model_path(kModel), kCtx);
}

// A 4-layer model with the fixture's tokenizer (as tests/mpi's ThreeRanksPlanned): the planner
// gives every rank layers of its own.
TEST_F(MpiServingRanks, ThreeRanksPlanned) {
  const std::string model = dir_.file("four-layers.gguf");
  const std::string mk = std::string(PIPELLM_CLI_BIN) +
                         " mkmodel --arch llama --layers 4 --embd 128 --ff 256 --heads 4 --kv-heads 2 --vocab " +
                         model_path(kModel) + " --quant Q8_0 --seed 7 " + model + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(mk.c_str()), 0) << mk;
  auto coord = serve_stages(rank_config(dir_, "three.yaml", model, 3));
  ASSERT_NE(coord, nullptr);
  const auto info = info_of(*coord);
  EXPECT_EQ(info.n_stages(), 3);
  int a0 = -1, b0 = -1, a1 = -1, b1 = -1, a2 = -1, b2 = -1;
  ASSERT_EQ(std::sscanf(info.plan().c_str(), "rank0:[%d,%d) rank1:[%d,%d) rank2:[%d,%d)", &a0, &b0, &a1, &b1, &a2, &b2), 6)
      << info.plan();
  EXPECT_TRUE(a0 == 0 && a0 < b0 && b0 == a1 && a1 < b1 && b1 == a2 && a2 < b2 && b2 == 4) << info.plan();
  expect_concurrent_streams_match(*coord, model, kCtx);
}

// The 2-layer fixture over three ranks (as tests/mpi's ThreeRanksHeadOnlyTail): one layer on
// each of the first two, the output head alone on the last, which samples.
TEST_F(MpiServingRanks, ThreeRanksHeadOnlyTail) {
  auto coord = serve_stages(rank_config(dir_, "three-tail.yaml", model_path(kModel), 3, {{0, 1}, {1, 2}, {2, 2}}));
  ASSERT_NE(coord, nullptr);
  const auto info = info_of(*coord);
  EXPECT_EQ(info.n_stages(), 3);
  EXPECT_EQ(info.plan(), "rank0:[0,1) rank1:[1,2) rank2:[2,2)");
  expect_concurrent_streams_match(*coord, model_path(kModel), kCtx);
}

}  // namespace
}  // namespace pipellm::test

// End to end with real pipeline stages: pipellm-coordinator launches `mpirun -np 2
// pipellm-stage` (two CPU ranks, one layer each) and serves 16 concurrent streaming clients;
// each gets the single-process engine's tokens, seeded sampling is reproducible, a stop id
// ends a request like the in-process backend does, and a cancelled stream frees its slot.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "tests/coordinator/coordinator_process.h"
#include "tests/coordinator/serving_cases.h"

namespace pipellm::test {
namespace {

namespace v1 = pipellm::v1;
constexpr const char* kModel = "tiny-llama-Q8_0";
constexpr int kCtx = 512;

bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

// Two CPU ranks, 4 KV slots, 2 micro-batches in flight.
std::string two_rank_config(const TempDir& dir) {
  const std::string cfg = dir.file("two.yaml");
  std::ofstream(cfg) << "model: " << model_path(kModel) << "\ncontext_length: " << kCtx
                     << "\nmax_sequences: 4\nmicro_batches: 2\nthreads: 1\ntransport: mpi\n"
                     << "stages:\n  - device: cpu\n  - device: cpu\n";
  return cfg;
}

class MpiServing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_mpirun()) return;
    dir_ = new TempDir;
    coord_ = new CoordinatorProcess({"--config", two_rank_config(*dir_), "--backend", "mpirun", "--stage-bin",
                                     PIPELLM_STAGE_BIN, "--stage-arg=--debug-step-delay-ms", "--stage-arg=2",
                                     "--max-queue", "64"});
    ASSERT_TRUE(coord_->wait_health("SERVING", 60000)) << coord_->log();
  }
  static void TearDownTestSuite() {
    delete coord_;
    delete dir_;
    coord_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (coord_ == nullptr) GTEST_SKIP() << "mpirun not found";
  }
  static TempDir* dir_;
  static CoordinatorProcess* coord_;
};
TempDir* MpiServing::dir_ = nullptr;
CoordinatorProcess* MpiServing::coord_ = nullptr;

TEST_F(MpiServing, InfoShowsTheTwoStagePlan) {
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(coord_->stub().GetModelInfo(&ctx, v1::ModelInfoRequest{}, &info).ok());
  EXPECT_EQ(info.n_stages(), 2);
  EXPECT_EQ(info.plan(), "rank0:[0,1) rank1:[1,2)");
  EXPECT_EQ(info.max_sequences(), 4);
  EXPECT_EQ(info.context_length(), kCtx);
}

TEST_F(MpiServing, ConcurrentStreamsMatchTheSingleProcessEngine) {
  expect_concurrent_streams_match(*coord_, kModel, kCtx);
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

}  // namespace
}  // namespace pipellm::test

// The serving head: a pipeline of in-process stages (StageRunner::serve_head) fed by the
// coordinator link through a SchedulerBridge, driven here as the coordinator would drive it.
// Greedy and seeded requests get the single-process engine's tokens; a stop id ends a request
// without being sent; a cancel mid-stream frees the slot for the next request; bad requests
// get Error{id}; Shutdown ends every rank; a vanished coordinator ends serving too.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <thread>

#include "base/error.h"
#include "engine/cpu/cpu_model.h"
#include "engine/link/coordinator_link.h"
#include "engine/link/scheduler_bridge.h"
#include "engine/pipeline/inproc_pipeline.h"
#include "engine/runtime/generator.h"
#include "tests/reference_generate.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

constexpr const char* kModel = "tiny-llama-Q8_0";
constexpr int kCtx = 128;
const std::string kSecret = "0123456789abcdef0123456789abcdef";

struct Outcome {
  std::vector<int32_t> tokens;
  bool finished = false;
  link::FinishedMsg fin;
  std::string error;
};

// Two CPU stages and a serving head on a thread, connected to a CoordinatorLink.
class ServedPipeline {
 public:
  ServedPipeline() : coord_("127.0.0.1:0") {
    file_ = GgufFile::open(test::model_path(kModel));
    cfg_ = ModelConfig::from_gguf(*file_);
    CpuStageOptions so;
    so.n_ctx = kCtx;
    so.n_slots = 2;
    for (int i = 0; i < 2; ++i) {
      pools_.push_back(std::make_unique<ThreadPool>(1));
      stages_.push_back(std::make_unique<CpuStage>(*file_, cfg_, LayerRange{i, i + 1}, i == 0, i == 1, so, *pools_.back()));
    }
    head_ = std::thread([this] { serve(); });
    if (!coord_.accept_head(kSecret, 10000)) throw Error("the head did not connect");
  }
  ~ServedPipeline() {
    if (head_.joinable()) {
      try {
        coord_.send(link::ShutdownRequest{});
      } catch (const std::exception&) {
      }
      head_.join();
    }
  }

  link::CoordinatorLink& coord() { return coord_; }
  int n_vocab() const { return cfg_.n_vocab; }
  void join() { head_.join(); }
  const std::string& end_reason() const { return end_reason_; }
  const std::string& error() const { return error_; }

  // Reads head messages into `out` until every id in `ids` has ended (bounded).
  void collect(std::map<uint64_t, Outcome>& out, const std::vector<uint64_t>& ids) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    auto open = [&] {
      for (uint64_t id : ids) {
        if (!out[id].finished && out[id].error.empty()) return true;
      }
      return false;
    };
    while (open() && std::chrono::steady_clock::now() < until) {
      auto m = coord_.receive(100);
      if (m) record(*m, out);
    }
    ASSERT_FALSE(open()) << "requests still open after 60 s";
  }
  static void record(const link::HeadMessage& m, std::map<uint64_t, Outcome>& out) {
    if (const auto* t = std::get_if<link::TokenMsg>(&m)) {
      out[t->id].tokens.push_back(t->token);
    } else if (const auto* f = std::get_if<link::FinishedMsg>(&m)) {
      out[f->id].finished = true;
      out[f->id].fin = *f;
    } else if (const auto* e = std::get_if<link::ErrorMsg>(&m)) {
      out[static_cast<uint64_t>(e->id)].error = e->message;
    }
  }

 private:
  void serve() {
    try {
      link::HelloMsg hello;
      hello.n_vocab = cfg_.n_vocab;
      hello.n_ctx = kCtx;
      hello.max_sequences = 2;
      hello.n_stages = 2;
      hello.secret = kSecret;
      auto head = link::HeadLink::connect(coord_.address(), hello, 10000);
      SchedulerOptions so;
      so.n_slots = 2;
      so.n_ctx = kCtx;
      so.micro_batches = 2;
      so.max_batch_tokens = 16;
      so.prefill_chunk = 8;
      Scheduler sched(so);
      link::SchedulerBridge bridge(sched, *head, cfg_.n_vocab, kCtx);
      InprocOptions io;
      io.serve = [&](std::chrono::milliseconds wait) { return bridge.poll(wait); };
      run_inproc_pipeline({stages_[0].get(), stages_[1].get()}, sched, [&](const TokenEvent& e) { bridge.on_token(e); }, io);
      end_reason_ = bridge.end_reason();
    } catch (const std::exception& e) {
      error_ = e.what();
    }
  }

  link::CoordinatorLink coord_;
  std::unique_ptr<GgufFile> file_;
  ModelConfig cfg_;
  std::vector<std::unique_ptr<ThreadPool>> pools_;
  std::vector<std::unique_ptr<CpuStage>> stages_;
  std::thread head_;
  std::string end_reason_, error_;
};

link::SubmitRequest submit(uint64_t id, std::vector<int32_t> prompt, int max_tokens, float temp = 0.0f, uint64_t seed = 0) {
  link::SubmitRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = temp;
  r.sampling.top_k = temp > 0 ? 20 : 0;
  r.sampling.seed = seed;
  return r;
}

std::vector<int32_t> prompt_of(size_t start, size_t len) {
  const auto all = test::read_ids(test::testdata("ref/" + std::string(kModel) + ".tokens"));
  return {all.begin() + static_cast<long>(start), all.begin() + static_cast<long>(start + len)};
}

// The single-process engine's tokens for a request.
std::vector<int32_t> reference(const link::SubmitRequest& r) {
  CpuModelOptions mo;
  mo.n_threads = 1;
  mo.stage.n_ctx = kCtx;
  auto m = CpuModel::open(test::model_path(kModel), mo);
  return test::reference_generate(m->stage(), r.prompt, r.max_tokens, r.sampling, 8);
}

TEST(PipelineServe, RequestsMatchTheSingleProcessEngine) {
  ServedPipeline p;
  std::vector<link::SubmitRequest> reqs;
  for (uint64_t i = 0; i < 6; ++i) {
    reqs.push_back(submit(10 + i, prompt_of(2 * i, 3 + 4 * i), 4 + static_cast<int>(i), i % 2 ? 0.8f : 0.0f, 77 + i));
  }
  for (const auto& r : reqs) p.coord().send(r);
  std::map<uint64_t, Outcome> out;
  std::vector<uint64_t> ids;
  for (const auto& r : reqs) ids.push_back(r.id);
  p.collect(out, ids);
  for (const auto& r : reqs) {
    SCOPED_TRACE("request " + std::to_string(r.id));
    const Outcome& o = out[r.id];
    EXPECT_EQ(o.error, "");
    EXPECT_EQ(o.tokens, reference(r));
    EXPECT_EQ(o.fin.reason, link::FinishReason::Length);
    EXPECT_EQ(o.fin.generated_tokens, r.max_tokens);
    EXPECT_EQ(o.fin.prompt_tokens, static_cast<int32_t>(r.prompt.size()));
  }
  p.coord().send(link::ShutdownRequest{});
  p.join();
  EXPECT_EQ(p.error(), "");
  EXPECT_EQ(p.end_reason(), "shutdown requested");
}

TEST(PipelineServe, StopIdIsNotSentAndCancelFreesTheSlot) {
  ServedPipeline p;
  // Stop at the greedy continuation's third token: the first two come back, then Stop.
  auto base = submit(1, prompt_of(0, 6), 8);
  const auto ref = reference(base);
  ASSERT_EQ(ref.size(), 8u);
  auto stopping = base;
  stopping.stop_ids = {ref[2]};
  const size_t first = static_cast<size_t>(std::find(ref.begin(), ref.end(), ref[2]) - ref.begin());
  p.coord().send(stopping);
  // Two long requests fill both slots; one is cancelled mid-stream and a third takes its slot.
  p.coord().send(submit(2, prompt_of(5, 5), 100));
  p.coord().send(submit(3, prompt_of(9, 4), 100));
  std::map<uint64_t, Outcome> out;
  p.collect(out, {1});
  EXPECT_EQ(out[1].fin.reason, link::FinishReason::Stop);
  EXPECT_EQ(out[1].tokens, std::vector<int32_t>(ref.begin(), ref.begin() + static_cast<long>(first)));
  EXPECT_EQ(out[1].fin.generated_tokens, static_cast<int32_t>(first));
  while (out[2].tokens.size() < 3) {
    auto m = p.coord().receive(5000);
    ASSERT_TRUE(m);
    ServedPipeline::record(*m, out);
  }
  p.coord().send(link::CancelRequest{2});
  const auto after = submit(4, prompt_of(20, 7), 6);
  p.coord().send(after);
  p.coord().send(link::CancelRequest{3});
  p.collect(out, {2, 3, 4});
  EXPECT_EQ(out[2].fin.reason, link::FinishReason::Cancelled);
  EXPECT_EQ(out[2].fin.generated_tokens, static_cast<int32_t>(out[2].tokens.size()));
  EXPECT_EQ(out[3].fin.reason, link::FinishReason::Cancelled);
  EXPECT_EQ(out[4].fin.reason, link::FinishReason::Length);
  EXPECT_EQ(out[4].tokens, reference(after));
  // No tokens after a Finished: nothing more arrives for the cancelled ids.
  const size_t n2 = out[2].tokens.size();
  while (auto m = p.coord().receive(200)) ServedPipeline::record(*m, out);
  EXPECT_EQ(out[2].tokens.size(), n2);
}

TEST(PipelineServe, BadRequestsGetErrorsAndTheHeadGoesOn) {
  ServedPipeline p;
  p.coord().send(submit(1, {}, 4));
  p.coord().send(submit(2, {1, p.n_vocab()}, 4));
  p.coord().send(submit(3, std::vector<int32_t>(kCtx, 1), 4));
  auto bad_sampling = submit(4, {1, 2}, 4, 0.5f);
  bad_sampling.sampling.top_p = -1.0f;
  p.coord().send(bad_sampling);
  p.coord().send(submit(5, {1, 2}, 0));
  p.coord().send(submit(6, {1, 2, 3}, 3));
  p.coord().send(submit(6, {1, 2, 3}, 3));  // the same id while it runs
  std::map<uint64_t, Outcome> out;
  p.collect(out, {1, 2, 3, 4, 5, 6});
  EXPECT_NE(out[1].error.find("empty prompt"), std::string::npos) << out[1].error;
  EXPECT_NE(out[2].error.find("outside the vocabulary"), std::string::npos) << out[2].error;
  EXPECT_NE(out[3].error.find("does not fit the context"), std::string::npos) << out[3].error;
  EXPECT_NE(out[4].error.find("top_p"), std::string::npos) << out[4].error;
  EXPECT_TRUE(out[5].finished);
  EXPECT_EQ(out[5].fin.generated_tokens, 0);
  EXPECT_NE(out[6].error.find("already running"), std::string::npos) << out[6].error;
  // The first id-6 request still completes (its Finished may come after the Error).
  while (!out[6].finished) {
    auto m = p.coord().receive(5000);
    ASSERT_TRUE(m);
    ServedPipeline::record(*m, out);
  }
  EXPECT_EQ(out[6].tokens, reference(submit(6, {1, 2, 3}, 3)));
}

TEST(PipelineServe, CoordinatorGoneEndsServing) {
  ServedPipeline p;
  p.coord().send(submit(1, prompt_of(0, 4), 100));
  auto m = p.coord().receive(5000);
  ASSERT_TRUE(m);
  p.coord().disconnect();
  p.join();  // bounded: the head sees the link closed at its next poll
  EXPECT_EQ(p.error(), "");
  EXPECT_NE(p.end_reason().find("lost the coordinator"), std::string::npos) << p.end_reason();
}

}  // namespace
}  // namespace pipellm

// The pipeline in one process (stage i on thread i, in-process transport) against the
// single-process engine: same greedy tokens, logits equal within 1e-5 relative; continuous
// batching of 8 sequences gives each the tokens it gets alone; a failing rank stops the rest.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <thread>

#include "base/error.h"
#include "engine/cpu/cpu_model.h"
#include "engine/pipeline/inproc_pipeline.h"
#include "engine/pipeline/inproc_transport.h"
#include "engine/runtime/generator.h"
#include "engine/runtime/grammar/token_vocabulary.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/reference_generate.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

constexpr int kCtx = 128;
constexpr int kChunk = 16;  // prefill chunk of both the reference and the pipeline (the CPU
                            // products round differently for different batch sizes)

struct Reference {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // the row each token was sampled from
};

// The single-process engine: generate() for the tokens, the same steps by hand for the logits.
Reference reference(const std::string& model, const std::vector<int32_t>& prompt, int n) {
  CpuModelOptions opt;
  opt.n_threads = 1;
  opt.stage.n_ctx = kCtx;
  auto m = CpuModel::open(test::model_path(model), opt);
  Reference r;
  r.tokens = test::reference_generate(m->stage(), prompt, n, SamplingSpec{}, kChunk);

  const int V = m->config().n_vocab;
  std::vector<float> logits;
  for (size_t i = 0; i < prompt.size(); i += kChunk) {
    const size_t n = std::min(prompt.size() - i, static_cast<size_t>(kChunk));
    const std::vector<int32_t> part(prompt.begin() + static_cast<long>(i), prompt.begin() + static_cast<long>(i + n));
    m->stage().forward(Batch::sequence(part, static_cast<int32_t>(i), 0), logits);
  }
  int pos = static_cast<int>(prompt.size());
  std::vector<int32_t> mine;
  for (int i = 0; i < n; ++i) {
    r.logits.push_back(logits);
    const int32_t t = test::argmax(logits.data(), static_cast<size_t>(V));
    mine.push_back(t);
    if (i + 1 < n) m->stage().forward(Batch::sequence({t}, pos++, 0), logits);
  }
  EXPECT_EQ(mine, r.tokens) << "generate() and the hand loop disagree";
  return r;
}

// A pipeline of CPU stages over one mapped file.
class Pipeline {
 public:
  // max_step: the stages' largest step (sizes sliding-window rings).
  Pipeline(const std::string& model, const std::vector<std::pair<int, int>>& ranges, int n_slots, int max_step = 512) {
    file_ = GgufFile::open(test::model_path(model));
    cfg_ = ModelConfig::from_gguf(*file_);
    CpuStageOptions so;
    so.n_ctx = kCtx;
    so.n_slots = n_slots;
    so.max_batch_tokens = max_step;
    for (size_t i = 0; i < ranges.size(); ++i) {
      pools_.push_back(std::make_unique<ThreadPool>(1));
      stages_.push_back(std::make_unique<CpuStage>(*file_, cfg_, LayerRange{ranges[i].first, ranges[i].second}, i == 0,
                                                   i + 1 == ranges.size(), so, *pools_.back()));
    }
  }
  std::vector<Stage*> stages() const {
    std::vector<Stage*> s;
    for (const auto& p : stages_) s.push_back(p.get());
    return s;
  }
  int n_vocab() const { return cfg_.n_vocab; }

 private:
  std::unique_ptr<GgufFile> file_;
  ModelConfig cfg_;
  std::vector<std::unique_ptr<ThreadPool>> pools_;
  std::vector<std::unique_ptr<CpuStage>> stages_;
};

struct Output {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  FinishReason finish = FinishReason::None;
};

std::map<int64_t, Output> run(Pipeline& p, const SchedulerOptions& so, const std::vector<Request>& reqs,
                              const InprocOptions& io = {}) {
  Scheduler sched(so);
  for (const auto& r : reqs) sched.submit(r);
  std::map<int64_t, Output> out;
  run_inproc_pipeline(p.stages(), sched, [&](const TokenEvent& e) {
    Output& o = out[e.seq_id];
    o.tokens.push_back(e.token);
    o.finish = e.finish;
    if (e.logits != nullptr) o.logits.emplace_back(e.logits, e.logits + e.n_vocab);
  }, io);
  return out;
}

std::vector<int32_t> fixture_prompt(const std::string& model, size_t n) {
  auto ids = test::read_ids(test::fixture_ref(model, ".tokens"));
  ids.resize(std::min(n, ids.size()));
  return ids;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& ref) {
  float scale = 0.0f;
  for (float v : ref) scale = std::max(scale, std::fabs(v));
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(a[i] - ref[i])) / scale);
  return worst;
}

void expect_matches(const std::string& model, const std::vector<std::pair<int, int>>& ranges) {
  Pipeline p(model, ranges, 1);
  SchedulerOptions so;
  so.n_slots = 1;
  so.n_ctx = kCtx;
  so.micro_batches = static_cast<int>(ranges.size());
  so.prefill_chunk = kChunk;
  InprocOptions io;
  io.return_logits = true;
  for (size_t len : {1u, 7u, 33u}) {
    SCOPED_TRACE(model + " prompt of " + std::to_string(len));
    const auto prompt = fixture_prompt(model, len);
    const int n = 8;
    const Reference ref = reference(model, prompt, n);
    Request r;
    r.id = 7;
    r.prompt = prompt;
    r.max_new_tokens = n;
    const auto out = run(p, so, {r}, io);
    ASSERT_EQ(out.count(7), 1u);
    const Output& o = out.at(7);
    EXPECT_EQ(o.tokens, ref.tokens);
    EXPECT_EQ(o.finish, FinishReason::Length);
    ASSERT_EQ(o.logits.size(), ref.logits.size());
    for (size_t i = 0; i < o.logits.size(); ++i) {
      ASSERT_EQ(o.logits[i].size(), static_cast<size_t>(p.n_vocab()));
      EXPECT_LE(max_rel_diff(o.logits[i], ref.logits[i]), 1e-5) << "token " << i;
    }
  }
}

TEST(PipelineInproc, OneStageMatchesSingleProcess) { expect_matches("tiny-llama-Q8_0", {{0, 2}}); }
TEST(PipelineInproc, TwoStagesMatchSingleProcess) { expect_matches("tiny-llama-Q8_0", {{0, 1}, {1, 2}}); }
TEST(PipelineInproc, TwoStagesQwen3) { expect_matches("tiny-qwen3-Q8_0", {{0, 1}, {1, 2}}); }
// Mixture of experts and sliding-window layers split across ranks (fixtures-arch).
TEST(PipelineInproc, TwoStagesQwen3Moe) { expect_matches("tiny-qwen3moe-Q4_K_M", {{0, 1}, {1, 2}}); }
TEST(PipelineInproc, ThreeStagesGptOss) { expect_matches("tiny-gptoss-MXFP4_MOE", {{0, 1}, {1, 2}, {2, 2}}); }
// A grammar crosses the step messages to the tail, which matches it against its own vocabulary:
// every generated token of a 3-stage pipeline keeps the text inside [a-z ]; without the tail's
// vocabulary the request fails by name instead of being sampled unconstrained.
TEST(PipelineInproc, GrammarReachesTheTail) {
  const std::string model = "tiny-llama-Q8_0";
  Pipeline p(model, {{0, 1}, {1, 2}, {2, 2}}, 1);
  auto f = GgufFile::open(test::model_path(model));
  auto tok = Tokenizer::from_gguf(*f);
  SchedulerOptions so;
  so.n_slots = 1;
  so.n_ctx = kCtx;
  so.micro_batches = 3;
  so.prefill_chunk = kChunk;
  Request r;
  r.id = 3;
  r.prompt = fixture_prompt(model, 5);
  r.max_new_tokens = 12;
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 11;
  r.sampling.grammar = "root ::= [a-z ]+";
  r.stop_tokens = {tok->eos_id()};  // the grammar may end: EOS is then allowed and stops the sequence
  InprocOptions io;
  io.grammar_vocab = grammar::TokenVocabulary::from_tokenizer(*tok);
  const auto out = run(p, so, {r}, io);
  ASSERT_EQ(out.count(3), 1u);
  std::string text;
  for (int32_t t : out.at(3).tokens) {
    if (t != tok->eos_id()) text += tok->token_to_piece(t);
  }
  ASSERT_FALSE(text.empty());
  for (char c : text) EXPECT_TRUE((c >= 'a' && c <= 'z') || c == ' ') << "'" << text << "'";
  EXPECT_THROW(run(p, so, {r}, InprocOptions{}), Error);
}

// Prompt caching (scheduler.h): requests that continue a conversation reuse the slot's cache
// for the prefix they share with what it holds, as far as the model's caches allow
// (ModelConfig::prefix_reuse_limit). B continues A exactly (every model reuses A's tokens); C
// shares 30 of B's 42 cached tokens (full attention reuses them; sliding-window rings of steps of
// 16 tokens too, the ring still holding the window; recurrent state cannot rewind: fed whole).
// Each one's tokens equal a fresh run's (greedy, penalties whose window then comes with the
// sequence's start, seeded sampling), its logits within the CPU products' rounding of other batch
// sizes (the prefix was computed in other chunks).
void expect_prefix_reuse_matches(const std::string& model, const std::vector<std::pair<int, int>>& ranges,
                                 int64_t want_reused) {
  SchedulerOptions so;
  so.n_slots = 1;
  so.n_ctx = kCtx;
  so.micro_batches = static_cast<int>(ranges.size());
  so.prefill_chunk = kChunk;
  so.max_batch_tokens = kChunk;
  so.reuse_prefix = true;
  so.reuse_limit = ModelConfig::from_gguf(*GgufFile::open(test::model_path(model))).prefix_reuse_limit(kChunk);
  InprocOptions io;
  io.return_logits = true;
  const std::vector<int32_t> text = fixture_prompt(model, 64);
  for (const int mode : {0, 1, 2}) {
    SCOPED_TRACE(model + (mode == 0 ? " greedy" : mode == 1 ? " greedy with penalties" : " seeded sampling with penalties"));
    Request a;
    a.id = 1;
    a.prompt.assign(text.begin(), text.begin() + 20);
    a.max_new_tokens = 6;
    if (mode > 0) {
      // A negative presence penalty this strong picks tokens of the window: a window missing
      // the cached prefix's tokens changes the output.
      a.sampling.presence_penalty = -30.0f;
      a.sampling.penalty_last_n = 24;
    }
    if (mode == 2) {
      a.sampling.temperature = 0.9f;
      a.sampling.seed = 5;
    }
    Pipeline p(model, ranges, 1, kChunk);
    Scheduler sched(so);
    std::map<int64_t, Output> cached;
    const auto serve = [&](const Request& r) {
      sched.submit(r);
      run_inproc_pipeline(p.stages(), sched, [&](const TokenEvent& e) {
        Output& o = cached[e.seq_id];
        o.tokens.push_back(e.token);
        o.logits.emplace_back(e.logits, e.logits + e.n_vocab);
      }, io);
    };
    serve(a);
    Request b = a;  // the conversation so far and 9 more tokens
    b.id = 2;
    b.prompt.insert(b.prompt.end(), cached[1].tokens.begin(), cached[1].tokens.end());
    b.prompt.insert(b.prompt.end(), text.begin() + 20, text.begin() + 29);
    b.max_new_tokens = 8;
    serve(b);
    Request c = a;  // 30 of the 42 tokens B left in the slot, then 4 others
    c.id = 3;
    c.prompt.assign(b.prompt.begin(), b.prompt.begin() + 30);
    c.prompt.insert(c.prompt.end(), text.begin() + 40, text.begin() + 44);
    serve(c);
    EXPECT_EQ(sched.reused_tokens(), want_reused);
    for (const Request& r : {b, c}) {
      Pipeline fresh_p(model, ranges, 1, kChunk);
      const auto fresh = run(fresh_p, so, {r}, io);
      const Output& got = cached.at(r.id);
      EXPECT_EQ(got.tokens, fresh.at(r.id).tokens) << "request " << r.id;
      ASSERT_EQ(got.logits.size(), fresh.at(r.id).logits.size());
      for (size_t i = 0; i < got.logits.size(); ++i) {
        EXPECT_LE(max_rel_diff(got.logits[i], fresh.at(r.id).logits[i]), 1e-4) << "request " << r.id << " token " << i;
      }
    }
  }
}

// B reuses A's 25 fed tokens and C 30 of B's, where the model allows (above).
TEST(PipelineInproc, CachedPrefixOneStage) { expect_prefix_reuse_matches("tiny-llama-Q8_0", {{0, 2}}, 55); }
TEST(PipelineInproc, CachedPrefixTwoStages) { expect_prefix_reuse_matches("tiny-llama-Q8_0", {{0, 1}, {1, 2}}, 55); }
TEST(PipelineInproc, CachedPrefixSlidingWindowRings) {
  expect_prefix_reuse_matches("tiny-gemma3-Q4_K_M", {{0, 3}, {3, 6}}, 55);
}
TEST(PipelineInproc, CachedPrefixRecurrentLayers) {
  expect_prefix_reuse_matches("tiny-qwen35moe-Q4_K_M", {{0, 2}, {2, 4}}, 25);
}

TEST(PipelineInproc, TwoStagesQwen35Moe) { expect_matches("tiny-qwen35moe-Q4_K_M", {{0, 2}, {2, 4}}); }
TEST(PipelineInproc, ThreeStagesQwen35Moe) { expect_matches("tiny-qwen35moe-Q4_K_M", {{0, 1}, {1, 3}, {3, 4}}); }
TEST(PipelineInproc, ThreeStagesGemma3) { expect_matches("tiny-gemma3-Q4_K_M", {{0, 2}, {2, 5}, {5, 6}}); }
TEST(PipelineInproc, ThreeStagesWithHeadOnlyTail) { expect_matches("tiny-tied-Q8_0", {{0, 1}, {1, 2}, {2, 2}}); }

// 8 sequences of different prompt and output lengths through 3 KV slots: they join and leave
// at step boundaries, share micro-batches and prefill in chunks; each gets its tokens alone.
void expect_continuous_batching(const std::vector<std::pair<int, int>>& ranges) {
  const std::string model = "tiny-llama-Q4_K_M";
  Pipeline p(model, ranges, 3);
  SchedulerOptions so;
  so.n_slots = 3;
  so.n_ctx = kCtx;
  so.micro_batches = 2;
  so.max_batch_tokens = 12;
  so.prefill_chunk = 5;
  const auto all = test::read_ids(test::fixture_ref(model, ".tokens"));
  std::vector<Request> reqs;
  for (int i = 0; i < 8; ++i) {
    Request r;
    r.id = 100 + i;
    const size_t start = static_cast<size_t>(3 * i), len = static_cast<size_t>(2 + (i * 5) % 17);
    r.prompt.assign(all.begin() + static_cast<long>(start), all.begin() + static_cast<long>(start + len));
    r.max_new_tokens = 3 + (i * 3) % 8;
    reqs.push_back(r);
  }
  const auto out = run(p, so, reqs);
  ASSERT_EQ(out.size(), reqs.size());
  for (const Request& r : reqs) {
    SCOPED_TRACE("request " + std::to_string(r.id));
    const Reference ref = reference(model, r.prompt, r.max_new_tokens);
    EXPECT_EQ(out.at(r.id).tokens, ref.tokens);
  }
}

TEST(PipelineInproc, ContinuousBatchingOneStage) { expect_continuous_batching({{0, 2}}); }
TEST(PipelineInproc, ContinuousBatchingTwoStages) { expect_continuous_batching({{0, 1}, {1, 2}}); }

TEST(PipelineInproc, FailingRankStopsThePipelineAndIsNamed) {
  for (int rank : {0, 1, 2}) {
    SCOPED_TRACE("fault on rank " + std::to_string(rank));
    Pipeline p("tiny-llama-Q8_0", {{0, 1}, {1, 2}, {2, 2}}, 1);
    SchedulerOptions so;
    so.n_ctx = kCtx;
    so.micro_batches = 2;
    Request r;
    r.prompt = fixture_prompt("tiny-llama-Q8_0", 5);
    r.max_new_tokens = 10;
    InprocOptions io;
    io.fault_rank = rank;
    io.fault.kind = FaultInjection::Kind::Throw;
    io.fault.at_step = 3;
    try {
      run(p, so, {r}, io);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(rank) + ": injected fault at step 3"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(PipelineInproc, BadBatchOnALaterRankIsReported) {
  // Slot 5 does not exist on a 1-slot pipeline: rank 0 rejects the step before sending it.
  Pipeline p("tiny-llama-Q8_0", {{0, 1}, {1, 2}}, 1);
  SchedulerOptions so;
  so.n_slots = 6;  // the scheduler believes in more slots than the stages have
  so.n_ctx = kCtx;
  std::vector<Request> reqs;
  for (int i = 0; i < 6; ++i) {
    Request r;
    r.id = i;
    r.prompt = fixture_prompt("tiny-llama-Q8_0", 3);
    r.max_new_tokens = 2;
    reqs.push_back(r);
  }
  try {
    run(p, so, reqs);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0: forward: slot 1 is outside [0, 1)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipellm

namespace pipellm {
namespace {

// Every rank's running totals reach the head with the step results: after the last step the
// head knows each rank's step count (all steps pass every rank) and a positive compute time.
TEST(PipelineInproc, StageStatsReachTheHead) {
  Pipeline p("tiny-tied-Q8_0", {{0, 1}, {1, 2}, {2, 2}}, 2);
  const auto stages = p.stages();
  const int n = static_cast<int>(stages.size());
  InprocHub hub(n);
  std::vector<std::thread> followers;
  for (int r = 1; r < n; ++r) {
    followers.emplace_back([&, r] {
      InprocTransport t(hub, r);
      try {
        StageRunner(*stages[static_cast<size_t>(r)], t).run_follower();
      } catch (const std::exception& e) {
        t.abort(e.what());
      }
    });
  }
  SchedulerOptions so;
  so.n_slots = 2;
  so.n_ctx = kCtx;
  so.prefill_chunk = kChunk;
  Scheduler sched(so);
  Request q;
  q.id = 1;
  q.prompt = fixture_prompt("tiny-tied-Q8_0", 20);
  q.max_new_tokens = 5;
  sched.submit(q);
  std::vector<RankStats> stats;
  HeadStats hs;
  {
    InprocTransport t(hub, 0);
    StageRunner head(*stages[0], t);
    EXPECT_EQ(head.stage_stats().size(), static_cast<size_t>(n));
    try {
      hs = head.run_head(sched, [](const TokenEvent&) {});
    } catch (const std::exception& e) {
      t.abort(e.what());
      ADD_FAILURE() << e.what();
    }
    stats = head.stage_stats();
  }
  for (auto& th : followers) th.join();
  ASSERT_GT(hs.steps, 0);
  ASSERT_EQ(stats.size(), static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    const RankStats& s = stats[static_cast<size_t>(r)];
    EXPECT_EQ(s.rank, r);
    EXPECT_EQ(s.steps, hs.steps) << "rank " << r;
    EXPECT_GT(s.step_seconds, 0.0) << "rank " << r;
    EXPECT_GE(s.transfer_seconds, 0.0) << "rank " << r;
    EXPECT_EQ(s.device_bytes, 0u) << "CPU stage " << r;
  }
  EXPECT_GT(stats[0].transfer_seconds, 0.0);  // the head sent activations every step
}

}  // namespace
}  // namespace pipellm

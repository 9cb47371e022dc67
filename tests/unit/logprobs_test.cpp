// Per-token log-probabilities through the runtime (Scheduler + StageRunner, one CPU rank) against
// float64 log-softmax of the plain forward pass's logits, with the penalties applied by hand:
// greedy, seeded sampling, and penalties; rows that did not ask get NaN; a request that does
// not ask gets none.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <vector>

#include "engine/cpu/cpu_model.h"
#include "engine/pipeline/inproc_transport.h"
#include "engine/pipeline/scheduler.h"
#include "engine/pipeline/stage_runner.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

constexpr int kCtx = 128;
constexpr const char* kModel = "tiny-llama-Q8_0";

std::unique_ptr<CpuModel> open_model(int n_slots) {
  CpuModelOptions opt;
  opt.n_threads = 1;
  opt.stage.n_ctx = kCtx;
  opt.stage.n_slots = n_slots;
  return CpuModel::open(test::model_path(kModel), opt);
}

// log p(token) for every token under softmax of the logits after the sampler's penalties, in float64.
std::vector<double> reference_logprobs(const std::vector<float>& logits, const std::vector<int32_t>& window,
                                       const SamplingSpec& s) {
  std::vector<double> l(logits.begin(), logits.end());
  std::map<int32_t, int> count;
  const size_t w0 = window.size() > static_cast<size_t>(s.penalty_last_n) ? window.size() - s.penalty_last_n : 0;
  for (size_t i = w0; i < window.size(); ++i) ++count[window[i]];
  for (const auto& [t, c] : count) {
    double& v = l[static_cast<size_t>(t)];
    v = v > 0 ? v / s.repeat_penalty : v * s.repeat_penalty;
    v -= c * s.frequency_penalty + s.presence_penalty;
  }
  double mx = l[0];
  for (double v : l) mx = std::max(mx, v);
  double z = 0;
  for (double v : l) z += std::exp(v - mx);
  for (double& v : l) v = v - mx - std::log(z);
  return l;
}

double reference_logprob(const std::vector<float>& logits, int32_t token, const std::vector<int32_t>& window,
                         const SamplingSpec& s) {
  return reference_logprobs(logits, window, s)[static_cast<size_t>(token)];
}

struct Served {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> top;
};

std::map<int64_t, Served> serve(const std::vector<Request>& reqs) {
  auto m = open_model(static_cast<int>(reqs.size()));
  SchedulerOptions so;
  so.n_slots = static_cast<int>(reqs.size());
  so.n_ctx = kCtx;
  Scheduler sched(so);
  for (const Request& r : reqs) sched.submit(r);
  InprocHub hub(1);
  InprocTransport t(hub, 0);
  std::map<int64_t, Served> out;
  StageRunner(m->stage(), t).run_head(sched, [&](const TokenEvent& e) {
    out[e.seq_id].tokens.push_back(e.token);
    out[e.seq_id].logprobs.push_back(e.logprob);
    out[e.seq_id].top.push_back(e.top_logprobs);
  });
  return out;
}

TEST(Logprobs, RuntimeEqualsFloat64LogSoftmax) {
  std::vector<Request> reqs(4);
  for (int i = 0; i < 4; ++i) {
    reqs[i].id = i + 1;
    reqs[i].prompt = {1, 20 + i, 300 + 7 * i, 41, 5};
    reqs[i].max_new_tokens = 12;
    reqs[i].sampling.logprobs = i != 3;  // the last one does not ask
  }
  reqs[1].sampling.temperature = 0.9f;  // seeded sampling
  reqs[1].sampling.seed = 5;
  reqs[2].sampling.repeat_penalty = 1.3f;  // greedy with penalties
  reqs[2].sampling.presence_penalty = 0.4f;
  reqs[2].sampling.frequency_penalty = 0.2f;
  reqs[2].sampling.penalty_last_n = 8;
  const auto got = serve(reqs);

  auto m = open_model(1);
  for (const Request& r : reqs) {
    const Served& s = got.at(r.id);
    ASSERT_EQ(s.tokens.size(), 12u);
    // Replay the sequence with the plain forward pass: logits before each sampled token.
    std::vector<int32_t> seq = r.prompt;
    std::vector<float> logits;
    m->stage().forward(Batch::sequence(seq, 0, 0), logits);
    for (size_t k = 0; k < s.tokens.size(); ++k) {
      if (!r.sampling.logprobs) {
        EXPECT_TRUE(std::isnan(s.logprobs[k])) << "request " << r.id << " did not ask";
      } else {
        const double want = reference_logprob(logits, s.tokens[k], seq, r.sampling);
        // The batched steps round the logits a little differently from one sequence alone.
        EXPECT_NEAR(s.logprobs[k], want, 1e-3) << "request " << r.id << " token " << k;
        EXPECT_LE(s.logprobs[k], 0.0f);
      }
      seq.push_back(s.tokens[k]);
      m->stage().forward(Batch::sequence({s.tokens[k]}, static_cast<int32_t>(seq.size()) - 1, 0), logits);
    }
  }
}

// The alternatives through the runtime: at each position the N largest of the float64
// log-softmax after penalties, most likely first; the chosen token's entry, when listed, equals
// its logprob; a request that does not ask gets none.
TEST(Logprobs, RuntimeTopLogprobsAreTheLargestOfTheFloat64LogSoftmax) {
  std::vector<Request> reqs(3);
  for (int i = 0; i < 3; ++i) {
    reqs[i].id = i + 1;
    reqs[i].prompt = {1, 30 + i, 200 + 11 * i, 7};
    reqs[i].max_new_tokens = 8;
    reqs[i].sampling.logprobs = true;
    reqs[i].sampling.top_logprobs = i == 2 ? 0 : 5;
  }
  reqs[0].sampling.temperature = 0.8f;
  reqs[0].sampling.seed = 11;
  reqs[1].sampling.repeat_penalty = 1.3f;
  reqs[1].sampling.frequency_penalty = 0.2f;
  reqs[1].sampling.penalty_last_n = 6;
  reqs[1].sampling.top_logprobs = kMaxTopLogprobs;
  const auto got = serve(reqs);

  auto m = open_model(1);
  for (const Request& r : reqs) {
    const Served& s = got.at(r.id);
    ASSERT_EQ(s.tokens.size(), 8u);
    std::vector<int32_t> seq = r.prompt;
    std::vector<float> logits;
    m->stage().forward(Batch::sequence(seq, 0, 0), logits);
    for (size_t k = 0; k < s.tokens.size(); ++k) {
      const std::vector<TokenLogprob>& top = s.top[k];
      if (r.sampling.top_logprobs == 0) {
        EXPECT_TRUE(top.empty()) << "request " << r.id << " did not ask";
      } else {
        const std::vector<double> ref = reference_logprobs(logits, seq, r.sampling);
        std::vector<double> sorted = ref;
        std::sort(sorted.begin(), sorted.end(), std::greater<double>());
        ASSERT_EQ(top.size(), static_cast<size_t>(r.sampling.top_logprobs));
        for (size_t i = 0; i < top.size(); ++i) {
          // The i-th largest value, and the id's own value (near-ties may swap within rounding).
          EXPECT_NEAR(top[i].logprob, sorted[i], 1e-3) << "request " << r.id << " token " << k << " rank " << i;
          EXPECT_NEAR(top[i].logprob, ref[static_cast<size_t>(top[i].id)], 1e-3);
          if (i > 0) {
            EXPECT_GE(top[i - 1].logprob, top[i].logprob);
          }
          if (top[i].id == s.tokens[k]) {
            EXPECT_EQ(top[i].logprob, s.logprobs[k]);
          }
        }
      }
      seq.push_back(s.tokens[k]);
      m->stage().forward(Batch::sequence({s.tokens[k]}, static_cast<int32_t>(seq.size()) - 1, 0), logits);
    }
  }
}

}  // namespace
}  // namespace pipellm

// The GPU sampler (kernels/cuda/sampling.cu) against the host Sampler (engine/runtime/sampler.cpp)
// on fixed logits, one setting at a time: greedy ids equal exactly (with and without penalties);
// stochastic settings draw from the distribution the host sampler's chain leaves (its surviving
// candidates and their final logits): a chi-square test over many rows, each row its own
// sequence (slot) with its own seed, so each draw is independent. Log-probabilities, where asked,
// equal the host sampler's for the drawn token.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/cuda_stage.h"
#include "engine/runtime/sampler.h"
#include "kernels/cuda/sampling.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

constexpr int kVocab = 512;
constexpr int kWindow = 24;  // tokens at positions [0, kWindow]: the row's own token is the last

struct Case {
  std::string name;
  SamplingSpec spec;
};

std::vector<float> base_logits(uint64_t seed) {
  std::mt19937_64 r(seed);
  std::normal_distribution<float> d(0.0f, 2.5f);
  std::vector<float> v(kVocab);
  for (auto& x : v) x = d(r);
  return v;
}

// The window: the most likely tokens, some repeated, so penalties change the ranking.
std::vector<int32_t> window_tokens(const std::vector<float>& logits) {
  std::vector<int32_t> order(kVocab);
  for (int i = 0; i < kVocab; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<int32_t> w;
  for (int i = 0; i <= kWindow; ++i) w.push_back(order[static_cast<size_t>(i % 9)]);
  return w;
}

struct Draws {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
};

// Samples one token per row on the GPU: row r is slot r with spec.seed + r.
Draws gpu_draws(const std::vector<float>& logits, const std::vector<int32_t>& window, SamplingSpec spec,
                               int rows) {
  std::vector<float> all;
  std::vector<cuda::SlotSampling> slots;
  std::vector<int32_t> history, row_slot, row_pos;
  for (int r = 0; r < rows; ++r) {
    all.insert(all.end(), logits.begin(), logits.end());
    SamplingSpec s = spec;
    s.seed = spec.seed + static_cast<uint64_t>(r);
    slots.push_back(cuda::CudaStage::slot_sampling(s));
    history.insert(history.end(), window.begin(), window.end());
    row_slot.push_back(r);
    row_pos.push_back(kWindow);
  }
  auto d_logits = test::to_device(all);
  auto d_slots = test::to_device(slots);
  auto d_hist = test::to_device(history);
  auto d_row_slot = test::to_device(row_slot);
  auto d_row_pos = test::to_device(row_pos);
  cuda::DeviceBuffer<uint64_t> counter(static_cast<size_t>(rows));
  PIPELLM_CUDA_CHECK(cudaMemset(counter.get(), 0, counter.bytes()));
  cuda::DeviceBuffer<int32_t> out(static_cast<size_t>(rows));
  cuda::DeviceBuffer<float> logprob(static_cast<size_t>(rows));
  test::poison(out);
  test::poison(logprob);
  cuda::SampleRowsArgs a;
  a.logits = d_logits.get();
  a.stride = kVocab;
  a.n_rows = rows;
  a.n_vocab = kVocab;
  a.row_slot = d_row_slot.get();
  a.row_pos = d_row_pos.get();
  a.slots = d_slots.get();
  a.counter = counter.get();
  a.history = d_hist.get();
  a.n_ctx = kWindow + 1;
  a.out = out.get();
  a.logprob = logprob.get();
  cuda::sample_rows(a, nullptr);
  PIPELLM_CUDA_CHECK(cudaDeviceSynchronize());
  return {test::to_host(out, static_cast<size_t>(rows)), test::to_host(logprob, static_cast<size_t>(rows))};
}

// The host sampler's distribution after penalties and its chain: token -> probability.
std::map<int32_t, double> host_distribution(const std::vector<float>& logits, const std::vector<int32_t>& window,
                                            const SamplingSpec& spec) {
  Sampler s(sampler_params(spec), kVocab);
  for (int32_t t : window) s.accept(t);
  s.sample(logits.data());
  const auto& c = s.last_candidates();
  double mx = -1e30, total = 0.0;
  for (const auto& x : c) mx = std::max(mx, static_cast<double>(x.logit));
  for (const auto& x : c) total += std::exp(static_cast<double>(x.logit) - mx);
  std::map<int32_t, double> p;
  for (const auto& x : c) p[x.id] = std::exp(static_cast<double>(x.logit) - mx) / total;
  return p;
}

std::vector<Case> greedy_cases() {
  SamplingSpec g;
  SamplingSpec gp;
  gp.repeat_penalty = 1.3f;
  gp.frequency_penalty = 0.4f;
  gp.presence_penalty = 0.6f;
  gp.penalty_last_n = 64;
  SamplingSpec gw = gp;
  gw.penalty_last_n = 5;  // a window shorter than the history
  return {{"greedy", g}, {"greedy_penalties", gp}, {"greedy_short_window", gw}};
}

TEST(GpuSampler, GreedyEqualsHostSamplerExactly) {
  PIPELLM_REQUIRE_GPU();
  for (const Case& c : greedy_cases()) {
    for (uint64_t seed = 1; seed <= 20; ++seed) {
      const auto logits = base_logits(seed);
      const auto window = window_tokens(logits);
      Sampler host(sampler_params(c.spec), kVocab);
      for (int32_t t : window) host.accept(t);
      const int32_t want = host.sample(logits.data());
      SamplingSpec with_lp = c.spec;
      with_lp.logprobs = true;
      const Draws got = gpu_draws(logits, window, with_lp, 1);
      EXPECT_EQ(got.tokens[0], want) << c.name << ", logits seed " << seed;
      EXPECT_NEAR(got.logprobs[0], host.logprob(want), 1e-4) << c.name << ", logits seed " << seed;
      EXPECT_TRUE(std::isnan(gpu_draws(logits, window, c.spec, 1).logprobs[0])) << "not asked: NaN";
    }
  }
}

// A sampled setting: temperature and filters (0 / 1 / 0: off).
SamplingSpec sampled(float temperature, int top_k, float top_p, float min_p) {
  SamplingSpec s;
  s.temperature = temperature;
  s.top_k = top_k;
  s.top_p = top_p;
  s.min_p = min_p;
  return s;
}

std::vector<Case> stochastic_cases() {
  SamplingSpec penalties = sampled(1.0f, 0, 1.0f, 0.0f);
  penalties.repeat_penalty = 1.5f;
  penalties.presence_penalty = 0.7f;
  penalties.frequency_penalty = 0.3f;
  penalties.penalty_last_n = 64;
  SamplingSpec temperature_first = sampled(1.5f, 0, 0.9f, 0.0f);
  SamplerParams chain;
  chain.chain = SamplerParams::parse_chain("temperature,top_k,top_p,min_p");
  temperature_first.chain = sampling_spec(chain).chain;
  return {{"temperature", sampled(0.7f, 0, 1.0f, 0.0f)},
          {"top_k", sampled(1.0f, 20, 1.0f, 0.0f)},
          {"top_p", sampled(0.9f, 0, 0.8f, 0.0f)},
          {"min_p", sampled(1.2f, 0, 1.0f, 0.05f)},
          {"default_chain", sampled(0.8f, 40, 0.95f, 0.05f)},
          {"penalties", penalties},
          {"temperature_first", temperature_first}};
}

TEST(GpuSampler, DrawsFollowTheHostSamplersDistribution) {
  PIPELLM_REQUIRE_GPU();
  constexpr int kDraws = 40000;
  const auto logits = base_logits(7);
  const auto window = window_tokens(logits);
  for (Case c : stochastic_cases()) {
    c.spec.seed = 1000;
    const auto want = host_distribution(logits, window, c.spec);
    c.spec.logprobs = true;
    const Draws draws = gpu_draws(logits, window, c.spec, kDraws);
    const auto& got = draws.tokens;
    // Each draw's log-probability is the host sampler's for that token (softmax after penalties).
    Sampler host(sampler_params(c.spec), kVocab);
    for (int32_t t : window) host.accept(t);
    host.sample(logits.data());
    for (int i = 0; i < 64; ++i) {
      ASSERT_NEAR(draws.logprobs[static_cast<size_t>(i)], host.logprob(got[static_cast<size_t>(i)]), 1e-4) << c.name;
    }
    std::map<int32_t, int> count;
    int outside = 0;
    for (int32_t t : got) {
      ASSERT_TRUE(t >= 0 && t < kVocab) << c.name;
      if (want.count(t)) ++count[t];
      else ++outside;
    }
    // Bins with at least 5 expected draws; the rest pooled into one bin.
    double chi2 = 0.0, pooled_e = 0.0, pooled_o = 0.0;
    int bins = 0;
    for (const auto& [t, p] : want) {
      const double e = p * kDraws, o = count[t];
      if (e < 5.0) {
        pooled_e += e;
        pooled_o += o;
        continue;
      }
      chi2 += (o - e) * (o - e) / e;
      ++bins;
    }
    if (pooled_e >= 5.0) {
      chi2 += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
      ++bins;
    }
    const double df = std::max(1, bins - 1);
    // About p < 1e-6 for a correct sampler (normal approximation of chi-square).
    const double limit = df + 7.0 * std::sqrt(2.0 * df) + 10.0;
    std::printf("[ %s ] %zu candidates, %d bins, chi2 %.1f (limit %.1f), %d draws outside\n", c.name.c_str(),
                want.size(), bins, chi2, limit, outside);
    EXPECT_LT(chi2, limit) << c.name;
    // Filter thresholds are found by bisection in float: a borderline token may differ, rarely.
    EXPECT_LE(outside, kDraws / 1000) << c.name;
  }
}

TEST(GpuSampler, UnsupportedChainIsRefusedWithAClearError) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  p.top_k = 10;
  p.chain = SamplerParams::parse_chain("top_p,top_k,temperature");
  try {
    cuda::CudaStage::slot_sampling(sampling_spec(p));
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("not supported on a GPU"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipellm

// Sampler: penalties (hand-computed), filters, distributions with fixed seeds, reproducibility.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "engine/runtime/sampler.h"
#include "engine/util/error.h"

namespace pipellm {
namespace {

SamplerParams plain(float temp, uint64_t seed = 1) {
  SamplerParams p;
  p.temperature = temp;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

std::map<int, int> histogram(Sampler& s, const std::vector<float>& logits, int n) {
  std::map<int, int> h;
  for (int i = 0; i < n; ++i) ++h[s.sample(logits.data())];
  return h;
}

TEST(Sampler, GreedyIsArgmax) {
  Sampler s(plain(0.0f), 5);
  const std::vector<float> l = {0.1f, 3.0f, -2.0f, 2.9f, 0.0f};
  EXPECT_EQ(s.sample(l.data()), 1);
  EXPECT_TRUE(s.last_candidates().empty());
}

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegative) {
  SamplerParams p = plain(0.0f);
  p.repeat_penalty = 1.2f;
  Sampler s(p, 2);
  s.accept(0);
  const std::vector<float> pos = {2.0f, 1.9f};  // 2.0 / 1.2 = 1.667 < 1.9
  EXPECT_EQ(s.sample(pos.data()), 1);
  const std::vector<float> neg = {-1.0f, -1.1f};  // -1.0 * 1.2 = -1.2 < -1.1
  EXPECT_EQ(s.sample(neg.data()), 1);
  Sampler fresh(p, 2);
  EXPECT_EQ(fresh.sample(pos.data()), 0);
}

TEST(Sampler, PresenceAndFrequencyPenalties) {
  SamplerParams p = plain(0.0f);
  p.frequency_penalty = 0.3f;
  Sampler s(p, 3);
  s.accept(0);
  s.accept(0);
  const std::vector<float> l = {1.0f, 0.5f, 0.0f};  // 1.0 - 2*0.3 = 0.4 < 0.5
  EXPECT_EQ(s.sample(l.data()), 1);
  SamplerParams q = plain(0.0f);
  q.presence_penalty = 0.3f;
  Sampler t(q, 3);
  t.accept(0);
  t.accept(0);
  EXPECT_EQ(t.sample(l.data()), 0);  // 1.0 - 0.3 = 0.7 > 0.5
}

TEST(Sampler, PenaltyWindowForgetsOldTokens) {
  SamplerParams p = plain(0.0f);
  p.repeat_penalty = 10.0f;
  p.penalty_last_n = 1;
  Sampler s(p, 2);
  s.accept(0);
  s.accept(1);  // pushes 0 out of the window
  const std::vector<float> l = {1.0f, 0.9f};
  EXPECT_EQ(s.sample(l.data()), 0);
}

TEST(Sampler, TopKNeverLeavesTheKBest) {
  SamplerParams p = plain(1.0f, 42);
  p.top_k = 5;
  const int V = 100;
  std::vector<float> l(V);
  for (int i = 0; i < V; ++i) l[static_cast<size_t>(i)] = std::sin(i * 1.7f) * 2.0f;  // distinct values
  std::vector<int> order(V);
  for (int i = 0; i < V; ++i) order[static_cast<size_t>(i)] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return l[static_cast<size_t>(a)] > l[static_cast<size_t>(b)]; });
  const std::set<int> best(order.begin(), order.begin() + 5);
  Sampler s(p, V);
  const auto h = histogram(s, l, 3000);
  for (const auto& [tok, n] : h) EXPECT_TRUE(best.count(tok)) << "token " << tok << " drawn " << n << " times";
  EXPECT_EQ(h.size(), 5u);  // all five are possible and get drawn
}

// probabilities 0.5, 0.3, 0.15, 0.05
std::vector<float> four_logits() {
  return {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplerParams p = plain(1.0f, 7);
  p.top_p = 0.7f;  // 0.5 < 0.7 <= 0.8: keeps tokens 0 and 1
  Sampler s(p, 4);
  const int N = 4000;
  const auto h = histogram(s, four_logits(), N);
  EXPECT_EQ(h.count(2) + h.count(3), 0u);
  // Renormalised: P(0) = 0.5 / 0.8 = 0.625; the standard deviation of the estimate is 0.0077.
  EXPECT_NEAR(static_cast<double>(h.at(0)) / N, 0.625, 0.03);
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  SamplerParams p = plain(1.0f, 9);
  p.min_p = 0.2f;  // threshold 0.1: keeps 0, 1, 2
  Sampler s(p, 4);
  const auto l = four_logits();
  s.sample(l.data());
  std::set<int> kept;
  for (const auto& c : s.last_candidates()) kept.insert(c.id);
  EXPECT_EQ(kept, (std::set<int>{0, 1, 2}));
  const auto h = histogram(s, l, 2000);
  EXPECT_EQ(h.count(3), 0u);
}

TEST(Sampler, TemperatureShapesTheDistribution) {
  const std::vector<float> l = {0.0f, std::log(3.0f)};
  const int N = 5000;
  Sampler t1(plain(1.0f, 3), 2);
  EXPECT_NEAR(static_cast<double>(histogram(t1, l, N)[1]) / N, 0.75, 0.03);
  Sampler t2(plain(2.0f, 3), 2);  // p ~ sqrt(3) : 1
  EXPECT_NEAR(static_cast<double>(histogram(t2, l, N)[1]) / N, std::sqrt(3.0) / (1.0 + std::sqrt(3.0)), 0.03);
}

TEST(Sampler, ChainOrderMatters) {
  const std::vector<float> l = {0.0f, -2.0f};  // probability ratio e^-2 = 0.135
  SamplerParams p = plain(2.0f);
  p.min_p = 0.2f;
  p.chain = {SamplerStage::MinP, SamplerStage::Temperature};
  Sampler a(p, 2);
  a.sample(l.data());
  EXPECT_EQ(a.last_candidates().size(), 1u);
  p.chain = {SamplerStage::Temperature, SamplerStage::MinP};  // ratio e^-1 = 0.37 survives
  Sampler b(p, 2);
  b.sample(l.data());
  EXPECT_EQ(b.last_candidates().size(), 2u);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> flat(100, 0.0f);
  auto draw = [&](uint64_t seed) {
    Sampler s(plain(1.0f, seed), 100);
    std::vector<int> v;
    for (int i = 0; i < 50; ++i) v.push_back(s.sample(flat.data()));
    return v;
  };
  EXPECT_EQ(draw(123), draw(123));
  EXPECT_NE(draw(123), draw(124));
  Sampler s(plain(1.0f, 5), 100);
  std::vector<int> first, again;
  for (int i = 0; i < 10; ++i) first.push_back(s.sample(flat.data()));
  s.reset();
  for (int i = 0; i < 10; ++i) again.push_back(s.sample(flat.data()));
  EXPECT_EQ(first, again);
}

TEST(Sampler, BadParametersAreRejected) {
  SamplerParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(p.validate(), InvalidArgument);
  p = SamplerParams();
  p.min_p = 1.5f;
  EXPECT_THROW(Sampler(p, 10), InvalidArgument);
  p = SamplerParams();
  p.repeat_penalty = 0.0f;
  EXPECT_THROW(p.validate(), InvalidArgument);
  EXPECT_THROW(SamplerParams::parse_chain("top_k,nucleus"), InvalidArgument);
  EXPECT_THROW(SamplerParams::parse_chain("top_k,top_k"), InvalidArgument);
  EXPECT_EQ(SamplerParams::parse_chain("min_p,temperature"),
            (std::vector<SamplerStage>{SamplerStage::MinP, SamplerStage::Temperature}));
}

}  // namespace
}  // namespace pipellm

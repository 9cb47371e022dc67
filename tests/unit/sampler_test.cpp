// Sampler: penalties (hand-computed), filters, distributions with fixed seeds, reproducibility.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "base/error.h"
#include "engine/runtime/grammar/token_vocabulary.h"
#include "engine/runtime/sampler.h"
#include "engine/runtime/slot_samplers.h"

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

// Grammar masks: token i is the letter 'a' + i for i < 4, token 4 a control token (no text),
// token 5 EOS.
std::shared_ptr<const grammar::TokenVocabulary> letters_vocab() {
  return std::make_shared<const grammar::TokenVocabulary>(std::vector<std::string>{"a", "b", "c", "d", "", "</s>"},
                                                          std::vector<int32_t>{5});
}

SamplerParams with_grammar(SamplerParams p, const std::string& gbnf) {
  p.grammar = gbnf;
  p.grammar_vocab = letters_vocab();
  return p;
}

TEST(Sampler, GrammarMasksTokensBeforeTheChain) {
  // The model prefers d, then the control token, then c; the grammar wants [ab] "c" and then
  // the end.
  const std::vector<float> l = {0.0f, 0.5f, 3.0f, 9.0f, 8.0f, 1.0f};
  std::set<int> first;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    SamplerParams p = with_grammar(plain(1.0f, seed), "root ::= [ab] \"c\"");
    p.top_k = 2;  // after the mask: a and b are the two best, d and the control token are gone
    Sampler s(p, 6);
    const int t = s.sample(l.data());
    ASSERT_TRUE(t == 0 || t == 1) << t;
    first.insert(t);
    for (const auto& c : s.last_candidates()) EXPECT_TRUE(c.id == 0 || c.id == 1) << c.id;
    EXPECT_EQ(s.sample(l.data()), 2);
    EXPECT_EQ(s.sample(l.data()), 5);
  }
  EXPECT_EQ(first, (std::set<int>{0, 1}));
}

TEST(Sampler, GreedyGrammarTakesTheBestAllowedToken) {
  Sampler s(with_grammar(plain(0.0f), "root ::= [ab]+ \"c\""), 6);
  const std::vector<float> l = {1.0f, 2.0f, 0.0f, 9.0f, 8.0f, 7.0f};
  EXPECT_EQ(s.sample(l.data()), 1);
  EXPECT_EQ(s.sample(l.data()), 1);
  const std::vector<float> prefer_c = {1.0f, 2.0f, 3.0f, 9.0f, 8.0f, 7.0f};
  EXPECT_EQ(s.sample(prefer_c.data()), 2);
  EXPECT_EQ(s.sample(prefer_c.data()), 5);  // only the end is left
  s.reset();                                 // the grammar starts over too
  EXPECT_EQ(s.sample(prefer_c.data()), 1);
}

TEST(Sampler, GrammarLeavesLogprobsOnTheModelsDistribution) {
  Sampler s(with_grammar(plain(0.0f), "root ::= \"a\""), 6);
  const std::vector<float> l = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
  EXPECT_EQ(s.sample(l.data()), 0);
  double sum = 0.0;
  for (float x : l) sum += std::exp(static_cast<double>(x));
  EXPECT_NEAR(s.logprob(0), -std::log(sum), 1e-9);
}

TEST(Sampler, GrammarDeadEndEndsWithEos) {
  // No token spells "z": the pick is the end-of-generation token rather than a token the
  // grammar rejects.
  Sampler s(with_grammar(plain(1.0f), "root ::= \"z\""), 6);
  const std::vector<float> l = {5.0f, 5.0f, 5.0f, 5.0f, 5.0f, 0.0f};
  EXPECT_EQ(s.sample(l.data()), 5);
}

TEST(Sampler, GrammarSettingsAreChecked) {
  SamplerParams p = plain(1.0f);
  p.grammar = "root ::= \"a\"";
  EXPECT_NO_THROW(p.validate());  // the vocabulary is only needed where the sampler is built
  EXPECT_THROW(Sampler(p, 6), InvalidArgument);
  p.grammar = "root ::= [a";
  try {
    p.validate();
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("sampler: grammar: line 1, column 10: unclosed '['"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Sampler(with_grammar(plain(1.0f), "root ::= \"a\""), 5), InvalidArgument);  // 6 texts, 5 logits
  // The settings travel through SamplingSpec.
  const SamplerParams q = with_grammar(plain(1.0f), "root ::= \"a\"");
  const SamplerParams back = sampler_params(sampling_spec(q));
  EXPECT_EQ(back.grammar, q.grammar);
  EXPECT_EQ(back.grammar_vocab, q.grammar_vocab);
}

TEST(Sampler, SlotSamplersApplyEachSlotsGrammar) {
  SlotSamplers ss(2, 6);
  SamplingSpec g;
  g.grammar = "root ::= \"cab\"";
  g.grammar_vocab = letters_vocab();
  ss.start(0, g);
  ss.start(1, SamplingSpec{});  // greedy, no grammar
  const std::vector<float> row = {0.0f, 1.0f, 2.0f, 9.0f, 0.0f, 0.0f};
  std::vector<float> logits;
  for (int i = 0; i < 2; ++i) logits.insert(logits.end(), row.begin(), row.end());
  std::vector<int32_t> seen0, seen1;
  std::vector<float> lp;
  std::vector<std::vector<TokenLogprob>> top;
  Batch b;
  b.add(1, 0, 0, true);
  b.add(1, 0, 1, true);
  for (int step = 0; step < 4; ++step) {
    const auto out = ss.sample(b, logits, lp, top);
    ASSERT_EQ(out.size(), 2u);
    seen0.push_back(out[0]);
    seen1.push_back(out[1]);
    b.clear();
    b.add(out[0], step + 1, 0, true);
    b.add(out[1], step + 1, 1, true);
  }
  EXPECT_EQ(seen0, (std::vector<int32_t>{2, 0, 1, 5}));
  EXPECT_EQ(seen1, (std::vector<int32_t>{3, 3, 3, 3}));
}

// The top-N of a sample's distribution against a float64 log-softmax of the same logits after
// the penalties, sorted by value then id.
std::vector<std::pair<double, int32_t>> reference_top(std::vector<double> l, int n) {
  double mx = l[0];
  for (double v : l) mx = std::max(mx, v);
  double z = 0.0;
  for (double v : l) z += std::exp(v - mx);
  std::vector<std::pair<double, int32_t>> all;
  for (size_t i = 0; i < l.size(); ++i) all.push_back({l[i] - mx - std::log(z), static_cast<int32_t>(i)});
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  all.resize(std::min(all.size(), static_cast<size_t>(std::max(n, 0))));
  return all;
}

TEST(Sampler, TopLogprobsAreTheLargestOfTheLogSoftmaxAfterPenalties) {
  SamplerParams p = plain(0.8f, 5);
  p.repeat_penalty = 1.3f;
  p.presence_penalty = 0.2f;
  p.frequency_penalty = 0.1f;
  p.top_k = 2;  // filters do not change the reported distribution
  Sampler s(p, 40);
  std::vector<float> l(40);
  for (int i = 0; i < 40; ++i) l[static_cast<size_t>(i)] = std::sin(0.7f * static_cast<float>(i)) * 3.0f;
  for (int32_t t : {3, 3, 10, 17}) s.accept(t);
  const int32_t chosen = s.sample(l.data());
  std::vector<double> ref(l.begin(), l.end());
  const std::map<int32_t, int> count = {{3, 2}, {10, 1}, {17, 1}};
  for (const auto& [t, c] : count) {
    double& v = ref[static_cast<size_t>(t)];
    v = v > 0 ? v / static_cast<double>(p.repeat_penalty) : v * static_cast<double>(p.repeat_penalty);
    v -= c * static_cast<double>(p.frequency_penalty) + static_cast<double>(p.presence_penalty);
  }
  for (int n : {1, 5, 20}) {
    const std::vector<TokenLogprob> top = s.top_logprobs(n);
    const auto want = reference_top(ref, n);
    ASSERT_EQ(top.size(), want.size()) << n;
    for (size_t i = 0; i < top.size(); ++i) {
      EXPECT_EQ(top[i].id, want[i].second) << "n " << n << " rank " << i;
      EXPECT_NEAR(top[i].logprob, want[i].first, 1e-5) << "n " << n << " rank " << i;
      if (i > 0) {
        EXPECT_GE(top[i - 1].logprob, top[i].logprob);
      }
      if (top[i].id == chosen) {
        EXPECT_EQ(top[i].logprob, static_cast<float>(s.logprob(chosen)));
      }
    }
  }
}

TEST(Sampler, TopLogprobsOrderTiesByIdAndStopAtTheVocabulary) {
  Sampler s(plain(0.0f), 6);
  const std::vector<float> l = {1.0f, 3.0f, 2.0f, 3.0f, 1.0f, 3.0f};
  EXPECT_TRUE(s.top_logprobs(3).empty());  // before any sample
  s.sample(l.data());
  const auto top = s.top_logprobs(4);
  ASSERT_EQ(top.size(), 4u);
  EXPECT_EQ(top[0].id, 1);
  EXPECT_EQ(top[1].id, 3);
  EXPECT_EQ(top[2].id, 5);
  EXPECT_EQ(top[3].id, 2);
  EXPECT_EQ(top[0].logprob, top[1].logprob);
  const auto all = s.top_logprobs(20);  // more than the vocabulary: every token once
  ASSERT_EQ(all.size(), 6u);
  std::set<int32_t> ids;
  double total = 0.0;
  for (const auto& t : all) {
    ids.insert(t.id);
    total += std::exp(static_cast<double>(t.logprob));
  }
  EXPECT_EQ(ids.size(), 6u);
  EXPECT_NEAR(total, 1.0, 1e-6);
  EXPECT_EQ(all[4].id, 0);  // the tie of 1.0 by id
  EXPECT_EQ(all[5].id, 4);
  EXPECT_TRUE(s.top_logprobs(0).empty());
  EXPECT_TRUE(s.top_logprobs(-3).empty());
}

TEST(Sampler, SlotSamplersListAlternativesWhereAsked) {
  SlotSamplers ss(2, 6);
  SamplingSpec a;
  a.top_logprobs = 2;
  ss.start(0, a);
  ss.start(1, SamplingSpec{});
  const std::vector<float> row = {0.0f, 1.0f, 2.0f, 9.0f, 0.0f, 0.0f};
  std::vector<float> logits(row);
  logits.insert(logits.end(), row.begin(), row.end());
  Batch b;
  b.add(1, 0, 0, true);
  b.add(1, 0, 1, true);
  std::vector<float> lp;
  std::vector<std::vector<TokenLogprob>> top;
  ss.sample(b, logits, lp, top);
  ASSERT_EQ(top.size(), 2u);
  ASSERT_EQ(top[0].size(), 2u);
  EXPECT_EQ(top[0][0].id, 3);
  EXPECT_EQ(top[0][1].id, 2);
  EXPECT_TRUE(top[1].empty());
  EXPECT_TRUE(lp.empty());  // logprobs not asked
  // Nobody asks: nothing.
  SlotSamplers none(1, 6);
  none.start(0, SamplingSpec{});
  Batch one;
  one.add(1, 0, 0, true);
  none.sample(one, row, lp, top);
  EXPECT_TRUE(top.empty());
  SamplingSpec bad;
  bad.top_logprobs = kMaxTopLogprobs + 1;
  EXPECT_THROW(ss.start(0, bad), InvalidArgument);
}

}  // namespace
}  // namespace pipellm

#include "engine/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <unordered_map>

#include "base/error.h"
#include "engine/runtime/grammar/gbnf_parser.h"
#include "engine/runtime/grammar/grammar_matcher.h"

namespace pipellm {

void SamplerParams::validate() const {
  auto bad = [](const std::string& what) { throw InvalidArgument("sampler: " + what); };
  if (!std::isfinite(temperature)) bad("temperature must be a finite number");
  if (!(top_p > 0.0f) || !std::isfinite(top_p)) bad("top_p must be in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) bad("min_p must be in [0, 1]");
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty)) bad("repeat_penalty must be positive");
  if (!std::isfinite(presence_penalty) || !std::isfinite(frequency_penalty)) bad("penalties must be finite");
  if (penalty_last_n < 0) bad("penalty_last_n must be >= 0");
  std::vector<SamplerStage> seen;
  for (SamplerStage s : chain) {
    if (std::find(seen.begin(), seen.end(), s) != seen.end()) bad("a stage appears twice in the chain");
    seen.push_back(s);
  }
  if (!grammar.empty()) {
    try {
      grammar::parse_gbnf(grammar);
    } catch (const FormatError& e) {
      throw InvalidArgument(std::string("sampler: ") + e.what());
    }
  }
}

std::vector<SamplerStage> SamplerParams::parse_chain(const std::string& s) {
  std::vector<SamplerStage> chain;
  std::istringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    SamplerStage st;
    if (item == "top_k") st = SamplerStage::TopK;
    else if (item == "top_p") st = SamplerStage::TopP;
    else if (item == "min_p") st = SamplerStage::MinP;
    else if (item == "temperature" || item == "temp") st = SamplerStage::Temperature;
    else throw InvalidArgument("sampler chain: unknown stage '" + item + "' (top_k, top_p, min_p, temperature)");
    if (std::find(chain.begin(), chain.end(), st) != chain.end()) {
      throw InvalidArgument("sampler chain: stage '" + item + "' appears twice");
    }
    chain.push_back(st);
  }
  return chain;
}

Sampler::Sampler(const SamplerParams& p, int n_vocab) : p_(p), n_vocab_(n_vocab), rng_(p.seed) {
  p_.validate();
  if (n_vocab <= 0) throw InvalidArgument("sampler: empty vocabulary");
  if (!p_.grammar.empty()) {
    if (!p_.grammar_vocab) {
      throw InvalidArgument("sampler: a grammar needs the vocabulary's token texts (grammar_vocab) to mask tokens");
    }
    if (p_.grammar_vocab->n_tokens() > n_vocab) {
      throw InvalidArgument("sampler: the grammar's vocabulary has " + std::to_string(p_.grammar_vocab->n_tokens()) +
                            " tokens, the model " + std::to_string(n_vocab));
    }
    auto g = std::make_shared<const grammar::Grammar>(grammar::parse_gbnf(p_.grammar));
    grammar_ = std::make_unique<grammar::GrammarMatcher>(std::move(g), p_.grammar_vocab);
  }
}

Sampler::~Sampler() = default;

void Sampler::reset() {
  window_.clear();
  rng_.seed(p_.seed);
  if (grammar_) grammar_->reset();
}

const uint8_t* Sampler::grammar_mask(int32_t& fallback) {
  fallback = -1;
  if (!grammar_) return nullptr;
  const std::vector<uint8_t>& m = grammar_->mask();
  // Ids past the vocabulary's texts (a padded output layer) are never allowed.
  allowed_.assign(static_cast<size_t>(n_vocab_), 0);
  std::copy(m.begin(), m.end(), allowed_.begin());
  if (std::find(allowed_.begin(), allowed_.end(), 1) != allowed_.end()) return allowed_.data();
  const auto& eog = grammar_->vocabulary().eog();
  if (eog.empty()) {
    throw Error("sampling: the grammar allows no token of the vocabulary here, and there is no end-of-generation token to stop with");
  }
  fallback = eog.front();
  return allowed_.data();
}

void Sampler::accept(int32_t token) {
  if (p_.penalty_last_n == 0) return;
  window_.push_back(token);
  while (static_cast<int>(window_.size()) > p_.penalty_last_n) window_.pop_front();
}

void Sampler::apply_penalties(std::vector<float>& logits) const {
  if (window_.empty()) return;
  if (p_.repeat_penalty == 1.0f && p_.presence_penalty == 0.0f && p_.frequency_penalty == 0.0f) return;
  std::unordered_map<int32_t, int> count;
  for (int32_t t : window_) {
    if (t >= 0 && t < n_vocab_) ++count[t];
  }
  for (const auto& [t, c] : count) {
    float& l = logits[static_cast<size_t>(t)];
    l = l > 0.0f ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    l -= static_cast<float>(c) * p_.frequency_penalty + p_.presence_penalty;
  }
}

void Sampler::sort_desc() {
  if (sorted_) return;
  std::sort(cand_.begin(), cand_.end(), [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  });
  sorted_ = true;
}

void Sampler::top_k(int k) {
  if (k <= 0 || k >= static_cast<int>(cand_.size())) return;
  auto cmp = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.end(), cmp);
  cand_.resize(static_cast<size_t>(k));
  sorted_ = true;
}

void Sampler::top_p(float p) {
  if (p >= 1.0f || cand_.size() <= 1) return;
  sort_desc();
  const double mx = cand_.front().logit;
  double total = 0.0;
  for (const auto& c : cand_) total += std::exp(static_cast<double>(c.logit) - mx);
  double cum = 0.0;
  size_t keep = cand_.size();
  for (size_t i = 0; i < cand_.size(); ++i) {
    cum += std::exp(static_cast<double>(cand_[i].logit) - mx) / total;
    if (cum >= p) {
      keep = i + 1;
      break;
    }
  }
  cand_.resize(keep);
}

void Sampler::min_p(float p) {
  if (p <= 0.0f || cand_.empty()) return;
  float mx = cand_.front().logit;
  for (const auto& c : cand_) mx = std::max(mx, c.logit);
  // prob >= p * max_prob  <=>  logit >= max_logit + log(p)
  const double threshold = static_cast<double>(mx) + std::log(static_cast<double>(p));
  cand_.erase(std::remove_if(cand_.begin(), cand_.end(),
                             [&](const Candidate& c) { return static_cast<double>(c.logit) < threshold; }),
              cand_.end());
}

double Sampler::log_normalizer() const {
  const float mx = *std::max_element(work_.begin(), work_.end());
  double sum = 0.0;
  for (float l : work_) sum += std::exp(static_cast<double>(l) - mx);
  return static_cast<double>(mx) + std::log(sum);
}

double Sampler::logprob(int32_t token) const {
  if (work_.empty() || token < 0 || token >= n_vocab_) return std::nan("");
  return static_cast<double>(work_[static_cast<size_t>(token)]) - log_normalizer();
}

std::vector<TokenLogprob> Sampler::top_logprobs(int n) const {
  std::vector<TokenLogprob> out;
  if (work_.empty() || n <= 0) return out;
  const size_t k = std::min(static_cast<size_t>(n), work_.size());
  // Ids by logit, ties by id: a partial sort of an index (k is at most 20, the vocabulary large).
  std::vector<int32_t> ids(work_.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), [&](int32_t a, int32_t b) {
    const float la = work_[static_cast<size_t>(a)], lb = work_[static_cast<size_t>(b)];
    return la > lb || (la == lb && a < b);
  });
  const double norm = log_normalizer();
  out.reserve(k);
  for (size_t i = 0; i < k; ++i) {
    out.push_back({ids[i], static_cast<float>(static_cast<double>(work_[static_cast<size_t>(ids[i])]) - norm)});
  }
  return out;
}

double Sampler::uniform() {
  return static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0);  // [0, 1), 53 bits
}

int32_t Sampler::sample(const float* logits) {
  work_.assign(logits, logits + n_vocab_);
  apply_penalties(work_);
  cand_.clear();
  sorted_ = false;
  const int32_t t = pick();
  if (grammar_ && !grammar_->accept(t) && !grammar_->vocabulary().is_eog(t)) {
    throw Error("sampling: token " + std::to_string(t) + " was picked but the grammar rejects it");
  }
  return t;
}

int32_t Sampler::pick() {
  if (p_.greedy()) {
    const auto best = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
    // The overall argmax is also the argmax among the allowed tokens when it is allowed: one
    // token's walk instead of a mask.
    if (!grammar_ || grammar_->allows(best)) return best;
    int32_t fallback;
    const uint8_t* allowed = grammar_mask(fallback);
    if (fallback >= 0) return fallback;
    int32_t arg = -1;
    for (int i = 0; i < n_vocab_; ++i) {
      if (allowed[i] && (arg < 0 || work_[static_cast<size_t>(i)] > work_[static_cast<size_t>(arg)])) arg = i;
    }
    return arg;
  }
  int32_t fallback;
  const uint8_t* allowed = grammar_mask(fallback);
  if (fallback >= 0) return fallback;
  cand_.reserve(static_cast<size_t>(n_vocab_));
  for (int i = 0; i < n_vocab_; ++i) {
    if (allowed == nullptr || allowed[i]) cand_.push_back({i, work_[static_cast<size_t>(i)]});
  }
  for (SamplerStage s : p_.chain) {
    switch (s) {
      case SamplerStage::TopK: top_k(p_.top_k); break;
      case SamplerStage::TopP: top_p(p_.top_p); break;
      case SamplerStage::MinP: min_p(p_.min_p); break;
      case SamplerStage::Temperature:
        for (auto& c : cand_) c.logit /= p_.temperature;
        break;
    }
  }
  float mx = cand_.front().logit;
  for (const auto& c : cand_) mx = std::max(mx, c.logit);
  double total = 0.0;
  for (const auto& c : cand_) total += std::exp(static_cast<double>(c.logit) - mx);
  const double u = uniform() * total;
  double cum = 0.0;
  for (const auto& c : cand_) {
    cum += std::exp(static_cast<double>(c.logit) - mx);
    if (u < cum) return c.id;
  }
  return cand_.back().id;
}

}  // namespace pipellm

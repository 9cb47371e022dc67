// Token sampling from one row of logits: penalties over a window of recent tokens, then a
// configurable chain of filters (top-k, top-p, min-p, temperature), then a draw from the
// remaining distribution with a seeded std::mt19937_64 (same seed, same logits -> same tokens).
// temperature <= 0 means greedy (argmax after penalties).
//
// With a grammar (structured output), only the tokens the grammar allows next are candidates:
// the mask applies after the penalties and before the chain (masked logits count as -inf), and
// the chosen token advances the grammar. End-of-generation tokens are allowed only where the
// grammar can end.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace pipellm {

namespace grammar {
class TokenVocabulary;
class GrammarMatcher;
}  // namespace grammar

enum class SamplerStage { TopK, TopP, MinP, Temperature };

struct SamplerParams {
  float temperature = 0.8f;       // <= 0: greedy
  int top_k = 40;                 // <= 0: off
  float top_p = 0.95f;            // >= 1: off
  float min_p = 0.05f;            // <= 0: off
  float repeat_penalty = 1.0f;    // 1: off; > 1 discourages tokens of the window
  float presence_penalty = 0.0f;  // subtracted once from a token present in the window
  float frequency_penalty = 0.0f; // subtracted per occurrence in the window
  int penalty_last_n = 64;        // window size in tokens (0: penalties off)
  uint64_t seed = 0;
  std::vector<SamplerStage> chain = {SamplerStage::TopK, SamplerStage::TopP, SamplerStage::MinP,
                                     SamplerStage::Temperature};
  // GBNF text the output must match ("" for none; grammar/gbnf_parser.h), and the vocabulary's
  // token texts it is matched against (the sampler needs it when there is a grammar).
  std::string grammar;
  std::shared_ptr<const grammar::TokenVocabulary> grammar_vocab;

  // Throws InvalidArgument naming the bad field (for a grammar: its line, column and error).
  void validate() const;
  bool greedy() const { return temperature <= 0.0f; }
  // "top_k,top_p,min_p,temperature" (any order, each at most once). Throws InvalidArgument.
  static std::vector<SamplerStage> parse_chain(const std::string& s);
};

struct Candidate {
  int32_t id;
  float logit;
};

// A token and its natural-log probability (Sampler::top_logprobs).
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
  bool operator==(const TokenLogprob& o) const { return id == o.id && logprob == o.logprob; }
};

class Sampler {
 public:
  // Throws InvalidArgument for bad parameters, or a grammar without a vocabulary (or one with
  // more tokens than n_vocab).
  Sampler(const SamplerParams& p, int n_vocab);
  ~Sampler();

  // Picks a token from logits[n_vocab] (the history's penalties applied to a copy). With a
  // grammar: among the tokens it allows, and advances it by the pick. Where it allows none (no
  // token of the vocabulary can spell what must come next) the pick is the first
  // end-of-generation token; Error when the vocabulary has none.
  int32_t sample(const float* logits);
  // Adds a token to the penalty window (prompt tokens and generated ones).
  void accept(int32_t token);
  void reset();  // clears the window, reseeds and restarts the grammar

  // The natural-log probability of `token` under the softmax of the last sample()'s logits after
  // penalties (temperature 1; the model's distribution, before any grammar mask).
  double logprob(int32_t token) const;
  // The min(n, n_vocab) most likely tokens of that same distribution (so the chosen token's entry,
  // when listed, equals logprob()), by descending probability, equal ones by ascending id. Empty
  // for n <= 0 or before any sample().
  std::vector<TokenLogprob> top_logprobs(int n) const;

  // The candidates left after the chain in the last sample() (sorted by logit when a filter
  // sorted them), with their final logits. Empty after a greedy sample.
  const std::vector<Candidate>& last_candidates() const { return cand_; }

 private:
  void apply_penalties(std::vector<float>& logits) const;
  // max + log(sum(exp(l - max))) over work_: the softmax's normaliser (logprob = l - this).
  double log_normalizer() const;
  int32_t pick();  // sample() on the penalised logits in work_
  // The grammar's allowed-token flags for this step (n_vocab entries), or nullptr without a
  // grammar; -1 in `fallback` when some token is allowed, else the token to return.
  const uint8_t* grammar_mask(int32_t& fallback);
  void sort_desc();
  void top_k(int k);
  void top_p(float p);
  void min_p(float p);
  double uniform();

  SamplerParams p_;
  int n_vocab_;
  std::mt19937_64 rng_;
  std::deque<int32_t> window_;
  std::vector<float> work_;
  std::vector<Candidate> cand_;
  bool sorted_ = false;
  std::unique_ptr<grammar::GrammarMatcher> grammar_;
  std::vector<uint8_t> allowed_;  // grammar mask widened to n_vocab
};

}  // namespace pipellm

// One sequence's place in a grammar: which tokens may come next (mask) and the advance by the
// token that was chosen (accept). The grammar and vocabulary are shared and read-only; the
// automaton's learned states and transitions (pda.h) are this matcher's own, so sequences never
// contend.
//
// mask() walks the vocabulary trie from the current state, one cached transition per trie node,
// skipping every subtree whose prefix the grammar rejects; a token is allowed when its whole text
// leaves a live state (ending inside a UTF-8 character is fine while some stack can still take a
// character it may become). The last few masks are kept by state, so a state that recurs (inside
// a string, between digits) costs a copy.
#pragma once
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "engine/runtime/grammar/grammar.h"
#include "engine/runtime/grammar/pda.h"
#include "engine/runtime/grammar/token_vocabulary.h"

namespace pipellm::grammar {

class GrammarMatcher {
 public:
  GrammarMatcher(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenVocabulary> v);

  // Per token id (vocabulary size): 1 where the token may come next. End-of-generation ids are
  // allowed only where the grammar can end; nothing is allowed after one was accepted.
  const std::vector<uint8_t>& mask();
  // Whether one token may come next (without building the mask).
  bool allows(int32_t token);
  // Advances by a token; false (state unchanged) when the grammar does not allow it.
  bool accept(int32_t token);
  // Advances by raw output bytes; false (state unchanged) when the grammar does not allow them.
  bool accept_text(std::string_view bytes);

  bool can_end() const { return !ended_ && pda_.can_end(state_); }
  bool ended() const { return ended_; }  // an end-of-generation token was accepted
  void reset();

  const TokenVocabulary& vocabulary() const { return *vocab_; }
  size_t n_states() const { return pda_.n_states(); }
  bool last_mask_cached() const { return last_cached_; }

 private:
  // The state after `bytes` from `s`, or Pda::kDead.
  int32_t walk(int32_t s, std::string_view bytes);
  void build_mask(std::vector<uint8_t>& m);
  void maybe_compact();

  struct CachedMask {
    int32_t state;
    std::vector<uint8_t> mask;
  };

  std::shared_ptr<const Grammar> g_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  Pda pda_;
  int32_t state_;
  bool ended_ = false;
  std::vector<uint8_t> mask_;
  std::vector<CachedMask> cache_;  // most recent first
  std::vector<int32_t> depth_state_;
  bool last_cached_ = false;
};

}  // namespace pipellm::grammar

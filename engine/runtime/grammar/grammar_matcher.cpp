#include "engine/runtime/grammar/grammar_matcher.h"

#include <algorithm>

#include "base/error.h"

namespace pipellm::grammar {

namespace {
constexpr size_t kCachedMasks = 8;
// Past these the automaton starts over from the current state (a few MB of transitions).
constexpr size_t kMaxStates = 4096;
constexpr size_t kMaxNodes = 1u << 20;
}  // namespace

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenVocabulary> v)
    : g_(std::move(g)), vocab_(std::move(v)), pda_(g_), state_(pda_.start()) {
  if (!vocab_) throw InvalidArgument("grammar: no vocabulary");
  depth_state_.resize(vocab_->trie().max_depth() + 1);
}

void GrammarMatcher::reset() {
  state_ = pda_.start();
  ended_ = false;
}

int32_t GrammarMatcher::walk(int32_t s, std::string_view bytes) {
  for (char c : bytes) {
    s = pda_.next(s, static_cast<uint8_t>(c));
    if (s == Pda::kDead) break;
  }
  return s;
}

bool GrammarMatcher::allows(int32_t token) {
  if (ended_ || token < 0 || token >= vocab_->n_tokens()) return false;
  if (vocab_->is_eog(token)) return pda_.can_end(state_);
  const std::string& t = vocab_->text(token);
  return !t.empty() && walk(state_, t) != Pda::kDead;
}

bool GrammarMatcher::accept(int32_t token) {
  if (!allows(token)) return false;
  if (vocab_->is_eog(token)) {
    ended_ = true;
    return true;
  }
  state_ = walk(state_, vocab_->text(token));
  maybe_compact();
  return true;
}

bool GrammarMatcher::accept_text(std::string_view bytes) {
  if (ended_) return bytes.empty();
  const int32_t s = walk(state_, bytes);
  if (s == Pda::kDead) return false;
  state_ = s;
  maybe_compact();
  return true;
}

void GrammarMatcher::maybe_compact() {
  if (pda_.n_states() <= kMaxStates && pda_.n_nodes() <= kMaxNodes) return;
  state_ = pda_.compact(state_);
  cache_.clear();  // keyed by the old state numbers
}

const std::vector<uint8_t>& GrammarMatcher::mask() {
  const auto n = static_cast<size_t>(vocab_->n_tokens());
  last_cached_ = false;
  if (ended_) {
    mask_.assign(n, 0);
    return mask_;
  }
  for (size_t i = 0; i < cache_.size(); ++i) {
    if (cache_[i].state != state_) continue;
    std::rotate(cache_.begin(), cache_.begin() + static_cast<long>(i), cache_.begin() + static_cast<long>(i) + 1);
    mask_ = cache_.front().mask;
    last_cached_ = true;
    return mask_;
  }
  mask_.assign(n, 0);
  build_mask(mask_);
  if (cache_.size() == kCachedMasks) cache_.pop_back();
  cache_.insert(cache_.begin(), CachedMask{state_, mask_});
  return mask_;
}

void GrammarMatcher::build_mask(std::vector<uint8_t>& m) {
  const TokenTrie& trie = vocab_->trie();
  const std::vector<TrieNode>& nodes = trie.nodes();
  // Preorder walk: a node's state is its parent's (kept per depth) stepped by its byte; a dead
  // state skips the node's whole subtree.
  depth_state_[0] = state_;
  const size_t n_nodes = nodes.size();
  size_t i = 1;
  while (i < n_nodes) {
    const TrieNode& nd = nodes[i];
    const int32_t s = pda_.next(depth_state_[nd.depth - 1u], nd.byte);
    if (s == Pda::kDead) {
      i = nd.end;
      continue;
    }
    depth_state_[nd.depth] = s;
    for (const int32_t* t = trie.tokens_begin(i); t != trie.tokens_end(i); ++t) m[static_cast<size_t>(*t)] = 1;
    ++i;
  }
  if (pda_.can_end(state_)) {
    for (int32_t id : vocab_->eog()) m[static_cast<size_t>(id)] = 1;
  }
}

}  // namespace pipellm::grammar

// The grammar as a pushdown automaton over UTF-8 bytes, with every state it reaches interned.
//
// A parse position is a stack of grammar positions (as in llama.cpp): the top is the character
// set to match next, the ones below are where to continue once the rule above ends; an empty
// stack means the grammar has matched completely. Stacks are linked nodes (top -> parent) made
// unique by hash-consing, so equal stacks are the same node id and pushing/popping shares the
// tail instead of copying it. A state is the sorted set of stacks the text so far can be in,
// plus any partial UTF-8 character (a token may end, or start, in the middle of one).
//
// States are numbered as they are first reached and each one's 256 byte transitions are filled
// in lazily: once a state was seen, stepping it by a byte is one table read. Inside a JSON string
// or a run of digits the same few states recur, so the trie walk of a mask (grammar_matcher.h)
// mostly costs those reads. States and nodes only grow; compact() starts over from one state.
#pragma once
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/runtime/grammar/grammar.h"

namespace pipellm::grammar {

class Pda {
 public:
  static constexpr int32_t kDead = -1;  // no stack survives the byte

  explicit Pda(std::shared_ptr<const Grammar> g);

  int32_t start() const { return start_; }
  // The state after byte `b` from state `s`, or kDead.
  int32_t next(int32_t s, uint8_t b) {
    const int32_t t = trans_[static_cast<size_t>(s) * 256 + b];
    return t != kUnknown ? t : compute(s, b);
  }
  // Whether the text up to state `s` is a complete match (no partial character pending).
  bool can_end(int32_t s) const { return states_[static_cast<size_t>(s)].can_end; }
  // Whether nothing but the end can follow (the only stack is the empty one).
  bool only_end(int32_t s) const;

  size_t n_states() const { return states_.size(); }
  size_t n_nodes() const { return nodes_.size(); }
  // Forgets every state and stack except state `keep`, which is returned under its new number
  // (bounds memory over a long generation; transitions are learned again as needed).
  int32_t compact(int32_t keep);

 private:
  static constexpr int32_t kUnknown = -2;
  static constexpr int32_t kEmpty = -1;  // the empty stack (as a node id)

  struct Node {
    const Element* pos;  // top: a character set; below: where the enclosing rule continues
    int32_t parent;      // node below, or kEmpty
  };
  struct NodeKey {
    const Element* pos;
    int32_t parent;
    bool operator==(const NodeKey& o) const { return pos == o.pos && parent == o.parent; }
  };
  struct NodeHash {
    size_t operator()(const NodeKey& k) const {
      return std::hash<const void*>()(k.pos) ^ (static_cast<size_t>(static_cast<uint32_t>(k.parent)) * 0x9E3779B97F4A7C15ULL);
    }
  };
  // A pending UTF-8 character either keeps its bits (exact) or, where every stack treats all
  // non-ASCII characters alike (inside a JSON string: all allowed), only how many bytes are
  // left (generic). Generic states keep the partial states of a string to a handful instead of
  // one per distinct byte prefix.
  struct Pending {
    uint32_t bits = 0;      // exact only
    uint8_t remain = 0;     // continuation bytes still to come (0: none pending)
    uint8_t length = 0;     // the character's length in bytes
    uint8_t next_lo = 0x80;  // the next byte's valid range (narrower after E0, ED, F0, F4)
    uint8_t next_hi = 0xBF;
    bool generic = false;
  };
  struct State {
    std::vector<int32_t> stacks;  // sorted node ids; kEmpty first when present
    Pending pending;
    bool can_end = false;
    int8_t uniform = -1;  // every stack takes all or none of U+0080..U+10FFFF (-1: not known yet)
  };
  struct KeyHash {
    size_t operator()(const std::vector<int32_t>& v) const {
      uint64_t h = 1469598103934665603ULL;
      for (int32_t x : v) h = (h ^ static_cast<uint32_t>(x)) * 1099511628211ULL;
      return static_cast<size_t>(h ^ (h >> 29));
    }
  };

  int32_t node(const Element* pos, int32_t parent);
  // Adds to `out` every stack reachable from stack `id` by entering rules until a character set
  // is on top (or the stack is empty).
  void expand(int32_t id, std::vector<int32_t>& out);
  int32_t compute(int32_t s, uint8_t b);
  int32_t step_code_point(int32_t s, uint32_t cp);
  int32_t intern(std::vector<int32_t> stacks, const Pending& p);
  int32_t lead_byte(int32_t s, uint8_t b);
  int32_t continuation_byte(int32_t s, uint8_t b);
  bool uniform_non_ascii(int32_t s);
  int32_t intern_if_viable(std::vector<int32_t> stacks, const Pending& p);
  int32_t initial_state();

  std::shared_ptr<const Grammar> g_;
  std::vector<std::vector<const Element*>> alternatives_;  // per rule: where each alternative starts
  std::vector<Node> nodes_;
  std::unordered_map<NodeKey, int32_t, NodeHash> node_ids_;
  std::vector<State> states_;
  std::unordered_map<std::vector<int32_t>, int32_t, KeyHash> state_ids_;
  std::vector<int32_t> trans_;  // [state][256]
  int32_t start_ = 0;
  std::vector<int32_t> scratch_;
};

}  // namespace pipellm::grammar

#include "engine/runtime/grammar/pda.h"

#include <algorithm>

#include "base/error.h"

namespace pipellm::grammar {

namespace {
// The smallest code point a UTF-8 sequence of each length may encode (shorter forms are
// overlong and invalid).
constexpr uint32_t kMinCodePoint[5] = {0, 0, 0x80, 0x800, 0x10000};
}  // namespace

Pda::Pda(std::shared_ptr<const Grammar> g) : g_(std::move(g)) {
  if (!g_ || g_->rules.empty()) throw InvalidArgument("grammar: empty grammar");
  alternatives_.resize(g_->rules.size());
  for (size_t r = 0; r < g_->rules.size(); ++r) {
    const std::vector<Element>& rule = g_->rules[r];
    if (rule.empty() || rule.back().type != ElementType::End) throw InvalidArgument("grammar: malformed rule " + g_->names[r]);
    alternatives_[r].push_back(rule.data());
    for (size_t i = 0; i + 1 < rule.size(); ++i) {
      if (rule[i].type == ElementType::Alt) alternatives_[r].push_back(rule.data() + i + 1);
    }
  }
  start_ = initial_state();
}

int32_t Pda::initial_state() {
  std::vector<int32_t> out;
  for (const Element* a : alternatives_[g_->root]) {
    expand(is_end_of_alternative(a) ? kEmpty : node(a, kEmpty), out);
  }
  return intern(std::move(out), Pending{});
}

bool Pda::only_end(int32_t s) const {
  const State& st = states_[static_cast<size_t>(s)];
  return st.pending.remain == 0 && st.stacks.size() == 1 && st.stacks[0] == kEmpty;
}

int32_t Pda::node(const Element* pos, int32_t parent) {
  const NodeKey key{pos, parent};
  auto it = node_ids_.find(key);
  if (it != node_ids_.end()) return it->second;
  const auto id = static_cast<int32_t>(nodes_.size());
  nodes_.push_back({pos, parent});
  node_ids_.emplace(key, id);
  return id;
}

void Pda::expand(int32_t id, std::vector<int32_t>& out) {
  if (id == kEmpty) {
    out.push_back(kEmpty);
    return;
  }
  const Element* pos = nodes_[static_cast<size_t>(id)].pos;
  const int32_t parent = nodes_[static_cast<size_t>(id)].parent;
  if (pos->type != ElementType::RuleRef) {
    out.push_back(id);  // a character set on top: this stack waits for a character
    return;
  }
  // Enter the rule: continue after the reference once it ends (nothing to push when the
  // reference ends its alternative: the rule returns straight to the parent, which keeps
  // right-recursive repetitions from growing the stack).
  const int32_t rest = is_end_of_alternative(pos + 1) ? parent : node(pos + 1, parent);
  for (const Element* a : alternatives_[pos->value]) {
    expand(is_end_of_alternative(a) ? rest : node(a, rest), out);
  }
}

int32_t Pda::intern(std::vector<int32_t> stacks, const Pending& p) {
  std::sort(stacks.begin(), stacks.end());
  stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
  std::vector<int32_t> key = stacks;
  key.push_back(static_cast<int32_t>(p.bits));
  key.push_back(static_cast<int32_t>(p.remain) | (static_cast<int32_t>(p.length) << 8) |
                (static_cast<int32_t>(p.generic) << 16));
  key.push_back(static_cast<int32_t>(p.next_lo) | (static_cast<int32_t>(p.next_hi) << 8));
  auto it = state_ids_.find(key);
  if (it != state_ids_.end()) return it->second;
  const auto id = static_cast<int32_t>(states_.size());
  State st;
  st.can_end = p.remain == 0 && !stacks.empty() && stacks[0] == kEmpty;
  st.stacks = std::move(stacks);
  st.pending = p;
  states_.push_back(std::move(st));
  state_ids_.emplace(std::move(key), id);
  trans_.resize(trans_.size() + 256, kUnknown);
  return id;
}

int32_t Pda::step_code_point(int32_t s, uint32_t cp) {
  std::vector<int32_t> out;
  // Copy: expand() may add states' nodes, and states_ must not be referenced across intern().
  const std::vector<int32_t> stacks = states_[static_cast<size_t>(s)].stacks;
  for (int32_t id : stacks) {
    if (id == kEmpty) continue;  // a finished match takes no more characters
    const Node n = nodes_[static_cast<size_t>(id)];
    const Element* after = nullptr;
    if (!match_char(n.pos, cp, &after)) continue;
    expand(is_end_of_alternative(after) ? n.parent : node(after, n.parent), out);
  }
  if (out.empty()) return kDead;
  return intern(std::move(out), Pending{});
}

bool Pda::uniform_non_ascii(int32_t s) {
  State& st = states_[static_cast<size_t>(s)];
  if (st.uniform < 0) {
    st.uniform = 1;
    for (int32_t id : st.stacks) {
      if (id == kEmpty) continue;
      const Element* pos = nodes_[static_cast<size_t>(id)].pos;
      if (!match_all(pos, 0x80, 0x10FFFF) && match_range(pos, 0x80, 0x10FFFF)) {
        st.uniform = 0;
        break;
      }
    }
  }
  return st.uniform == 1;
}

int32_t Pda::lead_byte(int32_t s, uint8_t b) {
  Pending p;
  if (b >= 0xC2 && b <= 0xDF) p.length = 2, p.bits = b & 0x1Fu;
  else if (b >= 0xE0 && b <= 0xEF) p.length = 3, p.bits = b & 0x0Fu;
  else if (b >= 0xF0 && b <= 0xF4) p.length = 4, p.bits = b & 0x07u;
  else return kDead;  // a continuation byte, an overlong lead (C0, C1) or past U+10FFFF
  p.remain = static_cast<uint8_t>(p.length - 1);
  // Second-byte limits that rule out overlong forms, surrogates and code points past U+10FFFF.
  if (b == 0xE0) p.next_lo = 0xA0;
  if (b == 0xED) p.next_hi = 0x9F;
  if (b == 0xF0) p.next_lo = 0x90;
  if (b == 0xF4) p.next_hi = 0x8F;
  const std::vector<int32_t> stacks = states_[static_cast<size_t>(s)].stacks;
  if (uniform_non_ascii(s)) {
    bool any = false;
    for (int32_t id : stacks) any = any || (id != kEmpty && match_range(nodes_[static_cast<size_t>(id)].pos, 0x80, 0x10FFFF));
    if (!any) return kDead;
    p.generic = true;
    p.bits = 0;
    return intern(stacks, p);
  }
  return intern_if_viable(stacks, p);
}

int32_t Pda::continuation_byte(int32_t s, uint8_t b) {
  const State st = states_[static_cast<size_t>(s)];
  const Pending& q = st.pending;
  if (b < q.next_lo || b > q.next_hi) return kDead;
  Pending p = q;
  p.remain = static_cast<uint8_t>(q.remain - 1);
  p.next_lo = 0x80;
  p.next_hi = 0xBF;
  if (!q.generic) p.bits = (q.bits << 6) | (b & 0x3Fu);
  if (p.remain > 0) return q.generic ? intern(st.stacks, p) : intern_if_viable(st.stacks, p);
  if (q.generic) {
    // Every non-ASCII character leads to the same stacks: step by any one of this length.
    static constexpr uint32_t kSome[5] = {0, 0, 0x80, 0x800, 0x10000};
    return step_code_point(s, kSome[q.length]);
  }
  return step_code_point(s, p.bits);
}

int32_t Pda::intern_if_viable(std::vector<int32_t> stacks, const Pending& p) {
  // An exact pending character survives only if some stack can take a code point it may become.
  const unsigned bits = 6u * p.remain;
  const uint32_t lo = std::max(p.bits << bits, kMinCodePoint[p.length]);
  const uint32_t hi = std::min((p.bits << bits) | ((1u << bits) - 1u), 0x10FFFFu);
  for (int32_t id : stacks) {
    if (id != kEmpty && lo <= hi && match_range(nodes_[static_cast<size_t>(id)].pos, lo, hi)) return intern(std::move(stacks), p);
  }
  return kDead;
}

int32_t Pda::compute(int32_t s, uint8_t b) {
  int32_t t;
  if (states_[static_cast<size_t>(s)].pending.remain > 0) t = continuation_byte(s, b);
  else if (b < 0x80) t = step_code_point(s, b);
  else t = lead_byte(s, b);
  trans_[static_cast<size_t>(s) * 256 + b] = t;
  return t;
}

int32_t Pda::compact(int32_t keep) {
  // The kept state's stacks as position lists (top first), then everything is rebuilt.
  const State old = states_[static_cast<size_t>(keep)];
  std::vector<std::vector<const Element*>> chains;
  for (int32_t id : old.stacks) {
    std::vector<const Element*> c;
    for (int32_t n = id; n != kEmpty; n = nodes_[static_cast<size_t>(n)].parent) c.push_back(nodes_[static_cast<size_t>(n)].pos);
    chains.push_back(std::move(c));
  }
  nodes_.clear();
  node_ids_.clear();
  states_.clear();
  state_ids_.clear();
  trans_.clear();
  start_ = initial_state();
  std::vector<int32_t> stacks;
  for (const auto& c : chains) {
    int32_t n = kEmpty;
    for (auto it = c.rbegin(); it != c.rend(); ++it) n = node(*it, n);
    stacks.push_back(n);
  }
  return intern(std::move(stacks), old.pending);
}

}  // namespace pipellm::grammar

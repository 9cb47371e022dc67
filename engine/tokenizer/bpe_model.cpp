#include "engine/tokenizer/bpe_model.h"

#include <algorithm>

#include "engine/tokenizer/unicode_text.h"

namespace pipellm::tok {

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

uint64_t hash_key(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

constexpr uint64_t kEmpty = ~0ULL;

// Heap order: lowest rank first, then leftmost.
bool pair_after(const BpeScratch::Pair& a, const BpeScratch::Pair& b) {
  return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
}

}  // namespace

BpeModel::BpeModel(const Vocab& vocab) : vocab_(vocab) {
  size_t cap = 16;
  while (cap < vocab.merges.size() * 2) cap <<= 1;
  keys_.assign(cap, kEmpty);
  values_.resize(cap);
  mask_ = cap - 1;

  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    // "left right", split at the first space after the first byte (as llama.cpp does).
    const std::string& m = vocab.merges[rank];
    const size_t sp = m.find(' ', 1);
    std::string_view left, right;
    if (sp != std::string::npos) {
      left = std::string_view(m).substr(0, sp);
      right = std::string_view(m).substr(sp + 1);
    }
    const int32_t a = symbol_of(left), b = symbol_of(right);
    std::string joined(left);
    joined += right;
    insert_merge(a, b, Merge{static_cast<int32_t>(rank), symbol_of(joined)});
  }
  ByteLevelMap bytes;
  for (int b = 0; b < 256; ++b) {
    byte_text_[b] = bytes.encode(static_cast<uint8_t>(b));
    const int32_t id = vocab.find(byte_text_[b]);
    auto it = extra_ids_.find(byte_text_[b]);
    byte_symbol_[b] = id >= 0 ? id : it != extra_ids_.end() ? it->second : -1;
  }
  extra_ids_.clear();
}

int32_t BpeModel::symbol_of(std::string_view s) {
  const int32_t id = vocab_.find(s);
  if (id >= 0) return id;
  auto it = extra_ids_.find(std::string(s));
  if (it != extra_ids_.end()) return it->second;
  const int32_t sym = vocab_.n_tokens() + static_cast<int32_t>(extra_text_.size());
  extra_text_.emplace_back(s);
  extra_ids_.emplace(std::string(s), sym);
  return sym;
}

void BpeModel::insert_merge(int32_t a, int32_t b, Merge m) {
  const uint64_t key = pair_key(a, b);
  for (uint64_t i = hash_key(key) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == key) return;  // a repeated merge keeps its first (lowest) rank
    if (keys_[i] == kEmpty) {
      keys_[i] = key;
      values_[i] = m;
      return;
    }
  }
}

const BpeModel::Merge* BpeModel::find_merge(int32_t a, int32_t b) const {
  const uint64_t key = pair_key(a, b);
  for (uint64_t i = hash_key(key) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == key) return &values_[i];
    if (keys_[i] == kEmpty) return nullptr;
  }
}

void BpeModel::emit_symbol(int32_t sym, std::vector<int32_t>& out) const {
  if (sym >= 0 && sym < vocab_.n_tokens()) {
    out.push_back(sym);
    return;
  }
  // Not a token: each byte of its text on its own, where that byte is a token.
  const std::string& text = sym >= 0 ? extra_text_[sym - vocab_.n_tokens()] : byte_text_[-1 - sym];
  for (char c : text) {
    const int32_t id = vocab_.find(std::string_view(&c, 1));
    if (id >= 0) out.push_back(id);
  }
}

void BpeModel::push_pair(BpeScratch& s, int32_t left, int32_t right) const {
  if (left < 0 || right < 0) return;
  const int32_t a = s.syms[left].id, b = s.syms[right].id;
  if (a < 0 || b < 0) return;
  const Merge* m = find_merge(a, b);
  if (m == nullptr) return;
  s.heap.push_back({m->rank, left, right, a, b});
  std::push_heap(s.heap.begin(), s.heap.end(), pair_after);
}

void BpeModel::encode_word(std::string_view raw, std::string_view encoded, std::vector<int32_t>& out,
                           BpeScratch& s) const {
  if (raw.empty()) return;
  if (vocab_.ignore_merges || raw.size() == 1) {
    const int32_t id = vocab_.find(encoded);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  constexpr size_t kMaxCachedWord = 32;
  std::vector<int32_t>* cached = nullptr;
  if (raw.size() <= kMaxCachedWord) {
    auto [it, inserted] = s.word_cache.try_emplace(std::string(raw));
    if (!inserted) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    cached = &it->second;
  }
  const size_t out_start = out.size();
  const int32_t n = static_cast<int32_t>(raw.size());
  s.syms.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    const auto b = static_cast<uint8_t>(raw[i]);
    s.syms[i] = {byte_symbol_[b] >= 0 ? byte_symbol_[b] : -1 - b, i - 1, i + 1 < n ? i + 1 : -1};
  }
  s.heap.clear();
  for (int32_t i = 1; i < n; ++i) push_pair(s, i - 1, i);
  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), pair_after);
    const BpeScratch::Pair p = s.heap.back();
    s.heap.pop_back();
    auto& l = s.syms[p.left];
    auto& r = s.syms[p.right];
    // Stale when either side has changed since the pair was queued.
    if (l.id != p.left_id || r.id != p.right_id || l.next != p.right) continue;
    l.id = find_merge(p.left_id, p.right_id)->result;
    l.next = r.next;
    if (r.next >= 0) s.syms[r.next].prev = p.left;
    r.id = -1000000;  // merged away
    r.next = r.prev = -2;
    push_pair(s, l.prev, p.left);
    push_pair(s, p.left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = s.syms[i].next) emit_symbol(s.syms[i].id, out);
  if (cached != nullptr) cached->assign(out.begin() + static_cast<std::ptrdiff_t>(out_start), out.end());
}

}  // namespace pipellm::tok

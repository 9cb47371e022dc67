#include "engine/tokenizer/spm_model.h"

#include <algorithm>
#include <cstdio>
#include <string_view>

#include "base/error.h"
#include "engine/tokenizer/unicode_text.h"

namespace pipellm::tok {

namespace {

struct Symbol {
  int32_t prev, next;
  size_t begin, len;  // bytes of the text
};

struct Bigram {
  float score;
  int32_t left, right;
  size_t len;
};

// Heap order: highest score first, then leftmost.
const char kSpaceMark[] = "\xE2\x96\x81";  // U+2581

bool bigram_after(const Bigram& a, const Bigram& b) {
  return a.score < b.score || (a.score == b.score && a.left > b.left);
}

}  // namespace

SpmModel::SpmModel(const Vocab& vocab, bool chunked) : vocab_(vocab), chunked_(chunked) {
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    int32_t id = vocab.find(hex);
    if (id < 0 && b != 0) {
      const char c = static_cast<char>(b);
      id = vocab.find(std::string_view(&c, 1));
    }
    byte_token_[b] = id;
  }
  // Every byte string of 1 to 4 bytes that ends right before a U+2581 inside a piece: the
  // symbol before a U+2581 in the text (one UTF-8 character, or one stray byte) can only be merged
  // with it when it is one of these.
  for (const std::string& t : vocab.text) {
    for (size_t at = t.find(kSpaceMark, 1); at != std::string::npos; at = t.find(kSpaceMark, at + 1)) {
      for (size_t k = 1; k <= 4 && k <= at; ++k) joins_space_.emplace(t, at - k, k);
    }
  }
}

void SpmModel::encode(const std::string& text, std::vector<int32_t>& out) const {
  // Walk the symbols exactly as encode_chunk splits them, so that every cut falls between two
  // symbols (with invalid UTF-8 a U+2581 may sit inside a symbol).
  const std::string_view all(text);
  size_t begin = 0, prev = 0;  // start of the current chunk, of the previous symbol
  for (size_t at = 0; chunked_ && at < all.size();) {
    const size_t len = std::min(utf8_len_from_lead(static_cast<uint8_t>(all[at])), all.size() - at);
    if (at > 0 && all.compare(at, len, kSpaceMark) == 0 && joins_space_.count(all.substr(prev, at - prev)) == 0) {
      encode_chunk(all.substr(begin, at - begin), out);
      begin = at;
    }
    prev = at;
    at += len;
  }
  encode_chunk(all.substr(begin), out);
}

void SpmModel::encode_chunk(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<Symbol> syms;
  for (size_t off = 0; off < text.size();) {
    const size_t len = std::min(utf8_len_from_lead(static_cast<uint8_t>(text[off])), text.size() - off);
    const auto i = static_cast<int32_t>(syms.size());
    syms.push_back({i - 1, off + len == text.size() ? -1 : i + 1, off, len});
    off += len;
  }
  std::vector<Bigram> heap;
  auto try_add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const std::string_view piece(text.data() + syms[l].begin, syms[l].len + syms[r].len);
    const int32_t id = vocab_.find(piece);
    if (id < 0) return;
    heap.push_back({vocab_.score[id], l, r, piece.size()});
    std::push_heap(heap.begin(), heap.end(), bigram_after);
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_add(i - 1, i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), bigram_after);
    const Bigram b = heap.back();
    heap.pop_back();
    Symbol& l = syms[b.left];
    Symbol& r = syms[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;  // stale
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
    const std::string_view piece(text.data() + syms[i].begin, syms[i].len);
    const int32_t id = vocab_.find(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : piece) {  // byte fallback
      const int32_t bt = byte_token_[static_cast<uint8_t>(c)];
      if (bt < 0) {
        throw Error("tokenizer: no byte token for byte " + std::to_string(static_cast<uint8_t>(c)));
      }
      out.push_back(bt);
    }
  }
}

}  // namespace pipellm::tok

#include "engine/tokenizer/special_tokens.h"

#include <cctype>

namespace pipellm::tok {

SpecialTokenMatcher::SpecialTokenMatcher(const Vocab& vocab) : vocab_(vocab) {
  for (int32_t id : vocab.special_tokens) {
    by_first_byte_[static_cast<uint8_t>(vocab.text[id][0])].push_back(id);
  }
}

std::vector<Fragment> SpecialTokenMatcher::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, 0, text.size()});

  // A token that does not occur anywhere in the text cannot occur in a fragment of it: find the
  // ones that do with one scan, so long texts are not searched once per special token.
  std::vector<char> present(vocab_.text.size(), 0);
  bool any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    for (int32_t id : by_first_byte_[static_cast<uint8_t>(text[i])]) {
      if (!present[id] && text.compare(i, vocab_.text[id].size(), vocab_.text[id]) == 0) {
        present[id] = 1;
        any = true;
      }
    }
  }
  if (!any) return frags;

  for (int32_t id : vocab_.special_tokens) {
    if (!present[id]) continue;
    const uint32_t attr = vocab_.attr[id];
    if (!parse_special && (attr & (kAttrControl | kAttrUnknown))) continue;
    const std::string& tok = vocab_.text[id];
    std::vector<Fragment> next;
    next.reserve(frags.size() + 2);
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t off = f.offset, len = f.length;
      while (true) {
        const size_t match = text.substr(0, off + len).find(tok, off);
        if (match == std::string_view::npos) {
          if (len > 0) next.push_back({-1, off, len});
          break;
        }
        size_t left_len = match - off;
        if (attr & kAttrLstrip) {
          while (left_len > 0 && std::isspace(static_cast<unsigned char>(text[off + left_len - 1]))) --left_len;
        }
        if (left_len > 0) next.push_back({-1, off, left_len});
        next.push_back({id, 0, 0});
        size_t right_off = match + tok.size();
        size_t right_len = off + len - right_off;
        if (attr & kAttrRstrip) {
          while (right_len > 0 && std::isspace(static_cast<unsigned char>(text[right_off]))) ++right_off, --right_len;
        }
        off = right_off;
        len = right_len;
        if (len == 0) break;
      }
    }
    frags.swap(next);
  }
  return frags;
}

}  // namespace pipellm::tok

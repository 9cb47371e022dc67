#include "engine/tokenizer/special_tokens.h"

#include <algorithm>
#include <cctype>

namespace pipellm::tok {

SpecialTokenMatcher::SpecialTokenMatcher(const Vocab& vocab) : vocab_(vocab) {
  std::fill(std::begin(root_child_), std::end(root_child_), -1);
  for (size_t rank = 0; rank < vocab.special_tokens.size(); ++rank) {
    const std::string& text = vocab.text[vocab.special_tokens[rank]];
    if (text.empty()) continue;  // cannot happen (empty texts are renamed), and would match nowhere
    int32_t* slot = &root_child_[static_cast<uint8_t>(text[0])];
    int32_t node = -1;
    for (size_t i = 0; i < text.size(); ++i) {
      const auto b = static_cast<uint8_t>(text[i]);
      if (i > 0) {
        slot = &nodes_[node].first_child;
        while (*slot >= 0 && nodes_[*slot].byte != b) slot = &nodes_[*slot].next_sibling;
      }
      if (*slot >= 0) {
        node = *slot;
        continue;
      }
      node = static_cast<int32_t>(nodes_.size());
      *slot = node;  // before the push_back, which may move the node `slot` points into
      nodes_.push_back(Node{});
      nodes_.back().byte = b;
    }
    // Texts are unique in the vocabulary, so no other token ends at this node.
    nodes_[node].rank = static_cast<int32_t>(rank);
  }
}

int32_t SpecialTokenMatcher::child(int32_t node, uint8_t byte) const {
  for (int32_t c = nodes_[node].first_child; c >= 0; c = nodes_[c].next_sibling) {
    if (nodes_[c].byte == byte) return c;
  }
  return -1;
}

std::vector<int32_t> SpecialTokenMatcher::present_ranks(std::string_view text, bool parse_special) const {
  std::vector<int32_t> ranks;
  std::vector<char> seen;
  for (size_t i = 0; i < text.size(); ++i) {
    int32_t node = root_child_[static_cast<uint8_t>(text[i])];
    for (size_t j = i + 1; node >= 0; ++j) {
      const int32_t rank = nodes_[node].rank;
      if (rank >= 0) {
        const bool parsed = parse_special || !(vocab_.attr[vocab_.special_tokens[rank]] & (kAttrControl | kAttrUnknown));
        if (seen.empty()) seen.resize(vocab_.special_tokens.size(), 0);
        if (parsed && !seen[rank]) {
          seen[rank] = 1;
          ranks.push_back(rank);
        }
      }
      if (j == text.size()) break;
      node = child(node, static_cast<uint8_t>(text[j]));
    }
  }
  std::sort(ranks.begin(), ranks.end());
  return ranks;
}

std::vector<Fragment> SpecialTokenMatcher::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, 0, text.size()});

  // A token that does not occur anywhere in the text cannot occur in a fragment of it.
  for (int32_t rank : present_ranks(text, parse_special)) {
    const int32_t id = vocab_.special_tokens[rank];
    const uint32_t attr = vocab_.attr[id];
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

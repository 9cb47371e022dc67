// Splits raw text around special tokens (control, user-defined, unknown) before tokenizing, in
// llama.cpp's order: longest token first, each one cutting every remaining text fragment at its
// leftmost non-overlapping occurrences. Control and unknown tokens are matched only when
// parse_special is set; user-defined ones always. LSTRIP/RSTRIP tokens eat adjacent spaces.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/tokenizer/vocab.h"

namespace pipellm::tok {

struct Fragment {
  int32_t token = -1;  // >= 0: a special token; -1: text [offset, offset + length)
  size_t offset = 0, length = 0;
};

class SpecialTokenMatcher {
 public:
  explicit SpecialTokenMatcher(const Vocab& vocab);
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;

 private:
  // Positions in vocab.special_tokens (the order tokens are applied in) of the tokens that occur
  // somewhere in `text`, ascending. One pass over the text through a prefix tree: Gemma 3 has
  // 6313 user-defined tokens starting with '<', and testing each of them at every '<' made 200 KB
  // of HTML take half a second.
  std::vector<int32_t> present_ranks(std::string_view text, bool parse_special) const;
  int32_t child(int32_t node, uint8_t byte) const;

  // Prefix tree over the special tokens' texts, children as sibling lists; the root's children
  // are looked up directly by byte.
  struct Node {
    int32_t first_child = -1, next_sibling = -1;
    int32_t rank = -1;  // >= 0: a token ends here (its position in vocab.special_tokens)
    uint8_t byte = 0;
  };

  const Vocab& vocab_;
  std::vector<Node> nodes_;
  int32_t root_child_[256];
};

}  // namespace pipellm::tok

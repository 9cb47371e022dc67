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
  const Vocab& vocab_;
  std::vector<int32_t> by_first_byte_[256];  // candidate tokens per first byte (prefilter)
};

}  // namespace pipellm::tok

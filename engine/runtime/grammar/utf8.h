// UTF-8 helpers for the grammar code: reading code points out of grammar text and writing them
// back (JSON schema literals, tests). Byte-by-byte decoding during matching lives in the
// automaton (pda.h), which must also handle characters split across tokens.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/tokenizer/unicode_text.h"

namespace pipellm::grammar {

// Decodes the code point starting at s[i] and advances i past it. Returns false (i unchanged)
// for a malformed or truncated sequence.
inline bool next_code_point(std::string_view s, size_t& i, uint32_t& cp) {
  if (i >= s.size()) return false;
  const auto b0 = static_cast<uint8_t>(s[i]);
  int len;
  uint32_t v;
  if (b0 < 0x80) {
    cp = b0;
    ++i;
    return true;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2, v = b0 & 0x1Fu;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, v = b0 & 0x0Fu;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, v = b0 & 0x07u;
  } else {
    return false;
  }
  if (i + static_cast<size_t>(len) > s.size()) return false;
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<uint8_t>(s[i + static_cast<size_t>(k)]);
    if ((b & 0xC0) != 0x80) return false;
    v = (v << 6) | (b & 0x3Fu);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < kMin[len] || v > 0x10FFFF) return false;
  cp = v;
  i += static_cast<size_t>(len);
  return true;
}

using tok::append_utf8;  // the tokenizer's encoder

}  // namespace pipellm::grammar

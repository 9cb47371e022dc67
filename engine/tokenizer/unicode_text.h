// Unicode helpers for the tokenizers: lenient UTF-8 decoding (the way llama.cpp decodes, so
// pre-tokenization sees the same code points), category flags, and the GPT-2 byte<->char map.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pipellm::tok {

// Category of a code point, one bit each, plus White_Space as an extra bit.
struct CptFlags {
  enum : uint16_t {
    kUndefined = 1 << 0,  // Cn (unassigned) and out-of-range values
    kNumber = 1 << 1,     // \p{N}
    kLetter = 1 << 2,     // \p{L}
    kSeparator = 1 << 3,  // \p{Z}
    kMark = 1 << 4,       // \p{M}
    kPunct = 1 << 5,      // \p{P}
    kSymbol = 1 << 6,     // \p{S}
    kControl = 1 << 7,    // \p{C} other than Cn
    kCategoryMask = 0xFF,
    kWhitespace = 1 << 8,  // Unicode White_Space property
  };
  uint16_t bits = 0;  // 0: "no code point" (past the end of a fragment)

  bool is_number() const { return bits & kNumber; }
  bool is_letter() const { return bits & kLetter; }
  bool is_whitespace() const { return bits & kWhitespace; }
  bool any() const { return bits != 0; }
  uint16_t category() const { return bits & kCategoryMask; }
};

CptFlags cpt_flags(uint32_t cpt);

// Lowercase mapping of one code point (simple case mapping).
uint32_t cpt_to_lower(uint32_t cpt);

// Byte length of a UTF-8 sequence judged by its first byte only (1 for stray continuation bytes).
inline size_t utf8_len_from_lead(uint8_t c) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

// Decodes UTF-8; every byte that does not start a well-formed sequence becomes U+FFFD.
std::vector<uint32_t> decode_utf8_lenient(std::string_view s);
void append_utf8(std::string& out, uint32_t cpt);  // cpt > 0x10FFFF is written as U+FFFD

// Length of the longest prefix of `s` that ends on a complete UTF-8 sequence boundary
// (an incomplete sequence at the very end is held back; invalid bytes count as complete).
size_t complete_utf8_prefix(std::string_view s);

// GPT-2 byte-level encoding: each byte maps to one printable code point.
class ByteLevelMap {
 public:
  ByteLevelMap();
  const std::string& encode(uint8_t b) const { return byte_to_utf8_[b]; }
  // Code point -> byte, or -1 when the code point is not one of the 256 encodings.
  int decode(uint32_t cpt) const { return cpt < cpt_to_byte_.size() ? cpt_to_byte_[cpt] : -1; }

 private:
  std::array<std::string, 256> byte_to_utf8_;
  std::vector<int16_t> cpt_to_byte_;
};

}  // namespace pipellm::tok

#include "engine/tokenizer/unicode_text.h"

#include <utf8proc.h>

namespace pipellm::tok {

namespace {

bool is_white_space(uint32_t c) {
  // The Unicode White_Space property (PropList.txt).
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

uint16_t category_bits(uint32_t cpt) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cpt))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      return CptFlags::kLetter;
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
      return CptFlags::kMark;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return CptFlags::kNumber;
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return CptFlags::kPunct;
    case UTF8PROC_CATEGORY_SM: case UTF8PROC_CATEGORY_SC: case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
      return CptFlags::kSymbol;
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
      return CptFlags::kSeparator;
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
      return CptFlags::kControl;
    default:
      return CptFlags::kUndefined;
  }
}

}  // namespace

CptFlags cpt_flags(uint32_t cpt) {
  if (cpt > 0x10FFFF) return CptFlags{CptFlags::kUndefined};
  uint16_t bits = category_bits(cpt);
  if (is_white_space(cpt)) bits |= CptFlags::kWhitespace;
  return CptFlags{bits};
}

uint32_t cpt_to_lower(uint32_t cpt) {
  if (cpt > 0x10FFFF) return cpt;
  return static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cpt)));
}

std::vector<uint32_t> decode_utf8_lenient(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  auto cont = [&](size_t i) { return i < n && (p[i] & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    const uint8_t b = p[i];
    uint32_t cpt = 0xFFFD;
    size_t len = 1;
    if (b < 0x80) {
      cpt = b;
    } else if (b < 0xC0) {
      // stray continuation byte
    } else if (b < 0xE0) {
      if (cont(i + 1)) cpt = ((b & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu), len = 2;
    } else if (b < 0xF0) {
      if (cont(i + 1) && cont(i + 2)) {
        cpt = ((b & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
        len = 3;
      }
    } else if (b < 0xF8) {
      if (cont(i + 1) && cont(i + 2) && cont(i + 3)) {
        cpt = ((b & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) |
              (p[i + 3] & 0x3Fu);
        len = 4;
        if (cpt > 0x10FFFF) cpt = 0xFFFD;  // not encodable; llama.cpp would fail here
      }
    }
    out.push_back(cpt);
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cpt) {
  if (cpt > 0x10FFFF) cpt = 0xFFFD;
  if (cpt <= 0x7F) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt <= 0x7FF) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0xFFFF) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

size_t complete_utf8_prefix(std::string_view s) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto b = static_cast<uint8_t>(s[n - back]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = 1;
    if (b >= 0xF0 && b < 0xF8) need = 4;
    else if (b >= 0xE0) need = 3;
    else if (b >= 0xC0) need = 2;
    return need > back ? n - back : n;
  }
  return n;
}

ByteLevelMap::ByteLevelMap() : cpt_to_byte_(512, -1) {
  // Printable Latin-1 bytes map to themselves; the others to U+0100 + k in byte order.
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const uint32_t cpt = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + next++);
    std::string s;
    append_utf8(s, cpt);
    byte_to_utf8_[b] = s;
    cpt_to_byte_[cpt] = static_cast<int16_t>(b);
  }
}

}  // namespace pipellm::tok

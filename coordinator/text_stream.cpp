#include "coordinator/text_stream.h"

#include <algorithm>

namespace pipellm::coord {

std::string valid_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // No overlong forms, surrogates or values past U+10FFFF.
    ok = ok && !(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) && !(len == 4 && cp < 0x10000) &&
         !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    }
  }
  return out;
}

TextStream::TextStream(const Tokenizer& tok, std::vector<std::string> stops, std::vector<int32_t> silent_ids,
                       std::vector<int32_t> shown_ids)
    : decoder_(tok, std::move(shown_ids)), stops_(stops), stop_list_(std::move(stops)), silent_(std::move(silent_ids)) {}

std::string TextStream::push(int32_t id) {
  if (stops_.stopped()) return "";
  if (std::find(silent_.begin(), silent_.end(), id) != silent_.end()) return "";
  const std::string piece = decoder_.push(id);
  seen_ += piece;
  return valid_utf8(stops_.push(piece));
}

std::string TextStream::flush() {
  if (stops_.stopped()) return "";
  const std::string piece = decoder_.flush();
  seen_ += piece;
  std::string out = stops_.push(piece);
  if (!stops_.stopped()) out += stops_.flush();
  return valid_utf8(out);
}

std::string TextStream::matched_stop() const {
  size_t best = std::string::npos;
  std::string which;
  for (const auto& s : stop_list_) {
    const size_t at = seen_.find(s);
    if (at != std::string::npos && (best == std::string::npos || at < best)) {
      best = at;
      which = s;
    }
  }
  return which;
}

}  // namespace pipellm::coord

#include "engine/runtime/grammar/gbnf_text.h"

#include <cstdio>

namespace pipellm::grammar {

namespace {
std::string hex_escape(uint32_t cp) {
  char buf[16];
  if (cp < 0x100) std::snprintf(buf, sizeof(buf), "\\x%02X", cp);
  else if (cp < 0x10000) std::snprintf(buf, sizeof(buf), "\\u%04X", cp);
  else std::snprintf(buf, sizeof(buf), "\\U%08X", cp);
  return buf;
}
}  // namespace

std::string gbnf_literal(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    const auto b = static_cast<uint8_t>(c);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (b < 0x20 || b == 0x7F) out += hex_escape(b);
    else out += c;
  }
  return out + "\"";
}

std::string gbnf_class_char(uint32_t cp) {
  if ((cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return std::string(1, static_cast<char>(cp));
  return hex_escape(cp);
}

std::string gbnf_join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

std::string gbnf_repeat(const std::string& item, long lo, long hi, const std::string& separator) {
  if (separator.empty()) {
    if (lo == 0 && hi == 1) return item + "?";
    if (hi < 0) return item + (lo == 0 ? "*" : lo == 1 ? "+" : "{" + std::to_string(lo) + ",}");
    if (lo == hi) return lo == 1 ? item : item + "{" + std::to_string(lo) + "}";
    return item + "{" + std::to_string(lo) + "," + std::to_string(hi) + "}";
  }
  if (hi == 0) return "";
  // item (sep item){lo-1,hi-1}, optional as a whole when lo == 0.
  const std::string rest = "(" + separator + " " + item + ")";
  std::string out = item;
  const long rlo = lo == 0 ? 0 : lo - 1, rhi = hi < 0 ? -1 : hi - 1;
  if (!(rhi == 0)) out += " " + gbnf_repeat(rest, rlo, rhi);
  return lo == 0 ? "(" + out + ")?" : out;
}

}  // namespace pipellm::grammar

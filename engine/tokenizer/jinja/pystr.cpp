#include "engine/tokenizer/jinja/pystr.h"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pipellm::jinja::pystr {

uint32_t decode_at(const std::string& s, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) {
    *len = 1;
    return c;
  }
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) {
      *len = 1;
      return c;
    }
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  *len = n;
  return cp;
}

namespace {

bool is_ascii(const std::string& s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

// Decoded code points with their byte ranges, for the functions that look at characters.
struct Cp {
  uint32_t cp;
  size_t at, len;
};

std::vector<Cp> decode(const std::string& s) {
  std::vector<Cp> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n;
    const uint32_t cp = decode_at(s, i, &n);
    out.push_back({cp, i, n});
    i += n;
  }
  return out;
}

bool in_set(uint32_t cp, const std::vector<Cp>& set) {
  for (const Cp& c : set) {
    if (c.cp == cp) return true;
  }
  return false;
}

bool is_cased(uint32_t cp) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// Case mapping of a code point; invalid bytes (decoded as themselves) are left alone.
uint32_t map_case(uint32_t cp, int how) {
  if (cp > 0x10FFFF) return cp;
  const auto c = static_cast<utf8proc_int32_t>(cp);
  switch (how) {
    case 0: return static_cast<uint32_t>(utf8proc_toupper(c));
    case 1: return static_cast<uint32_t>(utf8proc_tolower(c));
    case 2: return static_cast<uint32_t>(utf8proc_totitle(c));
  }
  return cp;
}

void append_cp(std::string& out, const std::string& src, const Cp& c, uint32_t mapped) {
  if (mapped == c.cp) {
    out.append(src, c.at, c.len);  // keeps invalid bytes byte-exact
  } else {
    append_utf8(out, mapped);
  }
}

std::string map_all(const std::string& s, int how) {
  if (is_ascii(s)) {
    std::string out = s;
    for (char& ch : out) {
      if (how == 0 && ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 32);
      if (how == 1 && ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + 32);
    }
    return out;
  }
  std::string out;
  out.reserve(s.size());
  for (const Cp& c : decode(s)) append_cp(out, s, c, map_case(c.cp, how));
  return out;
}

bool is_line_break(uint32_t cp) {
  return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || (cp >= 0x1C && cp <= 0x1E) || cp == 0x85 ||
         cp == 0x2028 || cp == 0x2029;
}

}  // namespace

std::vector<size_t> code_point_offsets(const std::string& s) {
  std::vector<size_t> out;
  out.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size();) {
    out.push_back(i);
    size_t n;
    decode_at(s, i, &n);
    i += n;
  }
  out.push_back(s.size());
  return out;
}

size_t length(const std::string& s) {
  if (is_ascii(s)) return s.size();
  return code_point_offsets(s).size() - 1;
}

std::vector<std::string> chars(const std::string& s) {
  std::vector<std::string> out;
  for (const Cp& c : decode(s)) out.push_back(s.substr(c.at, c.len));
  return out;
}

bool is_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

std::string strip(const std::string& s, const std::string* chars_arg, bool left, bool right) {
  const std::vector<Cp> cps = decode(s);
  const std::vector<Cp> set = chars_arg ? decode(*chars_arg) : std::vector<Cp>{};
  const auto strippable = [&](uint32_t cp) { return chars_arg ? in_set(cp, set) : is_space(cp); };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strippable(cps[b].cp)) ++b;
  }
  if (right) {
    while (e > b && strippable(cps[e - 1].cp)) --e;
  }
  if (b == e) return {};
  return s.substr(cps[b].at, cps[e - 1].at + cps[e - 1].len - cps[b].at);
}

std::vector<std::string> split(const std::string& s, const std::string* sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t at = s.find(*sep, start);
      if (at == std::string::npos) break;
      out.push_back(s.substr(start, at - start));
      start = at + sep->size();
    }
    out.push_back(s.substr(start));
    return out;
  }
  const std::vector<Cp> cps = decode(s);
  size_t i = 0;
  while (true) {
    while (i < cps.size() && is_space(cps[i].cp)) ++i;
    if (i == cps.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      out.push_back(s.substr(cps[i].at));  // the rest, trailing whitespace included
      break;
    }
    const size_t b = i;
    while (i < cps.size() && !is_space(cps[i].cp)) ++i;
    const size_t end = i < cps.size() ? cps[i].at : s.size();
    out.push_back(s.substr(cps[b].at, end - cps[b].at));
  }
  return out;
}

std::vector<std::string> rsplit(const std::string& s, const std::string* sep, int64_t maxsplit) {
  if (maxsplit < 0) return split(s, sep, maxsplit);
  std::vector<std::string> rev;
  if (sep) {
    size_t end = s.size();
    while (static_cast<int64_t>(rev.size()) < maxsplit) {
      if (end < sep->size()) break;
      const size_t at = s.rfind(*sep, end - sep->size());
      if (at == std::string::npos) break;
      rev.push_back(s.substr(at + sep->size(), end - at - sep->size()));
      end = at;
    }
    rev.push_back(s.substr(0, end));
  } else {
    const std::vector<Cp> cps = decode(s);
    size_t i = cps.size();
    while (true) {
      while (i > 0 && is_space(cps[i - 1].cp)) --i;
      if (i == 0) break;
      if (static_cast<int64_t>(rev.size()) == maxsplit) {
        rev.push_back(s.substr(0, cps[i - 1].at + cps[i - 1].len));
        break;
      }
      const size_t e = i;
      while (i > 0 && !is_space(cps[i - 1].cp)) --i;
      rev.push_back(s.substr(cps[i].at, cps[e - 1].at + cps[e - 1].len - cps[i].at));
    }
  }
  return std::vector<std::string>(rev.rbegin(), rev.rend());
}

std::vector<std::string> splitlines(const std::string& s) {
  std::vector<std::string> out;
  const std::vector<Cp> cps = decode(s);
  size_t line_start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (!is_line_break(cps[i].cp)) continue;
    out.push_back(s.substr(line_start, cps[i].at - line_start));
    if (cps[i].cp == '\r' && i + 1 < cps.size() && cps[i + 1].cp == '\n') ++i;
    line_start = cps[i].at + cps[i].len;
  }
  if (line_start < s.size()) out.push_back(s.substr(line_start));
  return out;
}

std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  int64_t done = 0;
  if (from.empty()) {
    const std::vector<Cp> cps = decode(s);
    for (const Cp& c : cps) {
      if (count < 0 || done < count) out += to, ++done;
      out.append(s, c.at, c.len);
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t start = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(from, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += to;
    start = at + from.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

int64_t count(const std::string& s, const std::string& sub) {
  if (sub.empty()) return static_cast<int64_t>(length(s)) + 1;
  int64_t n = 0;
  for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
  return n;
}

int64_t find(const std::string& s, const std::string& sub, bool reverse) {
  const size_t at = reverse ? s.rfind(sub) : s.find(sub);
  if (at == std::string::npos) return -1;
  return static_cast<int64_t>(length(s.substr(0, at)));
}

std::string upper(const std::string& s) { return map_all(s, 0); }
std::string lower(const std::string& s) { return map_all(s, 1); }

std::string capitalize(const std::string& s) {
  std::string out;
  const std::vector<Cp> cps = decode(s);
  for (size_t i = 0; i < cps.size(); ++i) append_cp(out, s, cps[i], map_case(cps[i].cp, i == 0 ? 2 : 1));
  return out;
}

std::string title_method(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (const Cp& c : decode(s)) {
    append_cp(out, s, c, map_case(c.cp, prev_cased ? 1 : 2));
    prev_cased = is_cased(c.cp);
  }
  return out;
}

std::string title_filter(const std::string& s) {
  const auto is_sep = [](uint32_t cp) {
    return cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || is_space(cp);
  };
  std::string out;
  bool prev_sep = true;  // each run of separators or of other characters starts a new item
  bool first_of_item = true;
  for (const Cp& c : decode(s)) {
    const bool sep = is_sep(c.cp);
    if (sep != prev_sep || out.empty()) first_of_item = true;
    append_cp(out, s, c, map_case(c.cp, first_of_item ? 0 : 1));
    first_of_item = false;
    prev_sep = sep;
  }
  return out;
}

bool is_upper(const std::string& s) {
  bool cased = false;
  for (const Cp& c : decode(s)) {
    if (!is_cased(c.cp)) continue;
    if (map_case(c.cp, 1) == c.cp && map_case(c.cp, 0) != c.cp) return false;  // a lowercase letter
    cased = true;
  }
  return cased;
}

bool is_lower(const std::string& s) {
  bool cased = false;
  for (const Cp& c : decode(s)) {
    if (!is_cased(c.cp)) continue;
    if (map_case(c.cp, 0) == c.cp && map_case(c.cp, 1) != c.cp) return false;  // an uppercase letter
    cased = true;
  }
  return cased;
}

std::string repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (const Cp& c : decode(s)) {
    const uint32_t cp = c.cp;
    char buf[12];
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0xA0 && c.len > 1) || cp == 0xAD) {
      std::snprintf(buf, sizeof(buf), "\\x%02x", cp);
      out += buf;
    } else if (c.len == 1 && cp >= 0x80) {
      std::snprintf(buf, sizeof(buf), "\\x%02x", cp);  // an invalid byte
      out += buf;
    } else if (cp == 0x2028 || cp == 0x2029) {
      std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
      out += buf;
    } else {
      out.append(s, c.at, c.len);
    }
  }
  out += quote;
  return out;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof(buf), "%.*e", prec - 1, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  // buf is [-]d[.ddd]e(+|-)XX: the shortest digits that read back as d.
  std::string text = buf;
  std::string sign;
  if (text[0] == '-') sign = "-", text.erase(0, 1);
  const size_t e = text.find('e');
  std::string digits = text.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int exp = std::atoi(text.c_str() + e + 1);
  std::string out = sign;
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      const size_t int_digits = static_cast<size_t>(exp) + 1;
      if (digits.size() <= int_digits) {
        out += digits + std::string(int_digits - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, int_digits) + "." + digits.substr(int_digits);
      }
    } else {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  std::snprintf(buf, sizeof(buf), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return out + buf;
}

bool unescape(const std::string& body, std::string* out, size_t* bad) {
  const auto hex = [&](size_t at, size_t n, uint32_t* cp) {
    if (at + n > body.size()) return false;
    uint32_t v = 0;
    for (size_t k = 0; k < n; ++k) {
      const char c = body[at + k];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return false;
      v = v * 16 + static_cast<uint32_t>(d);
    }
    *cp = v;
    return true;
  };
  out->clear();
  uint32_t pending_high = 0;  // a \uD800-\uDBFF waiting for its low surrogate
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out->push_back(body[i]);
      continue;
    }
    const char c = body[++i];
    uint32_t cp = 0;
    switch (c) {
      case '\n': continue;  // line continuation
      case '\\': out->push_back('\\'); continue;
      case '\'': out->push_back('\''); continue;
      case '"': out->push_back('"'); continue;
      case 'a': out->push_back('\a'); continue;
      case 'b': out->push_back('\b'); continue;
      case 'f': out->push_back('\f'); continue;
      case 'n': out->push_back('\n'); continue;
      case 'r': out->push_back('\r'); continue;
      case 't': out->push_back('\t'); continue;
      case 'v': out->push_back('\v'); continue;
      case 'x':
      case 'u':
      case 'U': {
        const size_t n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        if (!hex(i + 1, n, &cp) || cp > 0x10FFFF) {
          *bad = i - 1;
          return false;
        }
        i += n;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          pending_high = cp;
          continue;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF && pending_high) {
          cp = 0x10000 + ((pending_high - 0xD800) << 10) + (cp - 0xDC00);
        } else if (pending_high) {
          append_utf8(*out, pending_high);  // a lone surrogate stays, as Python keeps it
        }
        pending_high = 0;
        append_utf8(*out, cp);
        continue;
      }
      case 'N':
        *bad = i - 1;
        return false;
      default:
        if (c >= '0' && c <= '7') {
          size_t n = 0;
          while (n < 3 && i + n < body.size() && body[i + n] >= '0' && body[i + n] <= '7') {
            cp = cp * 8 + static_cast<uint32_t>(body[i + n] - '0');
            ++n;
          }
          i += n - 1;
          append_utf8(*out, cp);
          continue;
        }
        out->push_back('\\');  // unknown escape: kept as written
        out->push_back(c);
        continue;
    }
  }
  return true;
}

}  // namespace pipellm::jinja::pystr

#include "engine/runtime/grammar/pattern_gbnf.h"

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include "base/error.h"
#include "engine/runtime/grammar/gbnf_text.h"
#include "engine/runtime/grammar/utf8.h"

namespace pipellm::grammar {
namespace {

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;  // inclusive code point ranges
constexpr uint32_t kMaxCp = 0x10FFFF;

Ranges normalize(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& x : r) {
    if (!out.empty() && x.first <= out.back().second + 1) out.back().second = std::max(out.back().second, x.second);
    else out.push_back(x);
  }
  return out;
}

Ranges complement(const Ranges& r0) {
  const Ranges r = normalize(r0);
  Ranges out;
  uint32_t next = 0;
  for (const auto& [a, b] : r) {
    if (a > next) out.emplace_back(next, a - 1);
    next = b + 1;
  }
  if (next <= kMaxCp) out.emplace_back(next, kMaxCp);
  return out;
}

Ranges intersect(const Ranges& a0, const Ranges& b0) {
  const Ranges a = normalize(a0), b = normalize(b0);
  Ranges out;
  for (const auto& x : a) {
    for (const auto& y : b) {
      const uint32_t lo = std::max(x.first, y.first), hi = std::min(x.second, y.second);
      if (lo <= hi) out.emplace_back(lo, hi);
    }
  }
  return out;
}

// What JSON cannot hold raw inside a string (the schema grammar's `char` also keeps DEL out).
const Ranges& needs_escape() {
  static const Ranges r = {{0x00, 0x1F}, {0x22, 0x22}, {0x5C, 0x5C}, {0x7F, 0x7F}};
  return r;
}

std::string json_escape(uint32_t cp) {
  switch (cp) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\b': return "\\b";
    case '\f': return "\\f";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    default: break;
  }
  if (cp < 0x20 || cp == 0x7F) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
    return buf;
  }
  std::string s;
  append_utf8(s, cp);
  return s;
}

const Ranges kDigit = {{'0', '9'}};
const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const Ranges kSpace = {{0x09, 0x0D}, {0x20, 0x20}, {0xA0, 0xA0}, {0x2028, 0x2029}, {0xFEFF, 0xFEFF}};
const Ranges kDot = complement({{0x0A, 0x0A}, {0x0D, 0x0D}, {0x2028, 0x2029}});

class Converter {
 public:
  explicit Converter(const std::string& pattern) : pattern_(pattern) {
    size_t i = 0;
    uint32_t cp;
    while (i < pattern.size()) {
      if (!next_code_point(pattern, i, cp)) fail_at(cps_.size(), "malformed UTF-8");
      cps_.push_back(cp);
    }
  }

  std::string run() {
    size_t end = cps_.size();
    const bool start_anchor = !cps_.empty() && cps_[0] == '^';
    if (start_anchor) pos_ = 1;
    const bool end_anchor = end > pos_ && cps_[end - 1] == '$' && !(end >= 2 && cps_[end - 2] == '\\');
    if (end_anchor) --end;
    end_ = end;
    bool top_alternation = false;
    const std::string body = alternation(&top_alternation);
    if (pos_ != end_) fail(cps_[pos_] == ')' ? "unmatched ')'" : "'^' and '$' are only supported at the ends");
    if (top_alternation && (start_anchor || end_anchor)) {
      fail_at(0, "anchors around a top-level '|' are not supported; group the alternatives: ^(a|b)$");
    }
    std::vector<std::string> parts;
    if (!start_anchor) parts.push_back(set(complement({})) + "*");
    if (!body.empty()) parts.push_back(top_alternation ? "(" + body + ")" : body);
    if (!end_anchor) parts.push_back(set(complement({})) + "*");
    return parts.empty() ? "\"\"" : gbnf_join(parts, " ");
  }

 private:
  [[noreturn]] void fail_at(size_t at, const std::string& what) const {
    throw InvalidArgument("json schema: pattern '" + pattern_ + "' at character " + std::to_string(at + 1) + ": " + what);
  }
  [[noreturn]] void fail(const std::string& what) const { fail_at(pos_, what); }
  bool more() const { return pos_ < end_; }
  uint32_t peek(size_t k = 0) const { return pos_ + k < end_ ? cps_[pos_ + k] : 0xFFFFFFFFu; }

  // A set of code points as one GBNF item: raw characters in a class, escaped ones as literals.
  std::string set(const Ranges& s) {
    std::vector<std::string> alts;
    const Ranges raw = intersect(s, complement(needs_escape()));
    if (!raw.empty()) {
      std::string c = "[";
      for (const auto& [a, b] : raw) c += gbnf_class_char(a) + (a == b ? "" : "-" + gbnf_class_char(b));
      alts.push_back(c + "]");
    }
    for (const auto& [a, b] : intersect(s, needs_escape())) {
      for (uint32_t cp = a; cp <= b; ++cp) alts.push_back(gbnf_literal(json_escape(cp)));
    }
    if (alts.empty()) fail("a character class that matches nothing");
    return alts.size() == 1 ? alts[0] : "(" + gbnf_join(alts, " | ") + ")";
  }
  std::string literal(uint32_t cp) { return gbnf_literal(json_escape(cp)); }

  std::string alternation(bool* top = nullptr) {
    std::vector<std::string> alts = {sequence()};
    while (more() && peek() == '|') {
      ++pos_;
      alts.push_back(sequence());
      if (top) *top = true;
    }
    for (auto& a : alts) {
      if (a.empty()) a = "\"\"";
    }
    return gbnf_join(alts, " | ");
  }

  std::string sequence() {
    std::vector<std::string> items;
    while (more() && peek() != '|' && peek() != ')') {
      std::string item = atom();
      item = quantified(item);
      items.push_back(item);
    }
    return gbnf_join(items, " ");
  }

  std::string quantified(const std::string& item) {
    if (!more()) return item;
    long lo = -1, hi = -1;
    const uint32_t c = peek();
    if (c == '*') lo = 0, hi = -1, ++pos_;
    else if (c == '+') lo = 1, hi = -1, ++pos_;
    else if (c == '?') lo = 0, hi = 1, ++pos_;
    else if (c == '{' && braces(lo, hi)) {
    } else return item;
    if (more() && peek() == '?') ++pos_;  // lazy: the set of matches is the same
    if (more() && (peek() == '*' || peek() == '+' || peek() == '{')) fail("a quantifier after a quantifier");
    return gbnf_repeat(item, lo, hi);
  }

  // {m} {m,} {m,n}; false (nothing consumed) when the brace is a literal.
  bool braces(long& lo, long& hi) {
    size_t p = pos_ + 1;
    auto number = [&](long& v) {
      const size_t start = p;
      v = 0;
      while (p < end_ && cps_[p] >= '0' && cps_[p] <= '9') {
        v = v * 10 + static_cast<long>(cps_[p] - '0');
        if (v > 10000) fail("repetition count above 10000");
        ++p;
      }
      return p > start;
    };
    if (!number(lo)) return false;
    hi = lo;
    if (p < end_ && cps_[p] == ',') {
      ++p;
      if (!number(hi)) hi = -1;
    }
    if (p >= end_ || cps_[p] != '}') return false;
    if (hi >= 0 && hi < lo) fail("repetition maximum below the minimum");
    pos_ = p + 1;
    return true;
  }

  std::string atom() {
    const uint32_t c = peek();
    if (c == '(') {
      if (++nesting_ > 256) fail("groups nested deeper than 256");
      ++pos_;
      if (peek() == '?') {
        if (peek(1) == ':') {
          pos_ += 2;
        } else if (peek(1) == '<' && peek(2) != '=' && peek(2) != '!') {
          pos_ += 2;
          while (more() && peek() != '>') ++pos_;  // a named group matches like a plain one
          if (!more()) fail("unclosed group name");
          ++pos_;
        } else {
          fail("lookarounds and other (?...) groups are not supported");
        }
      }
      const size_t open = pos_;
      std::string inner = alternation();
      if (!more() || peek() != ')') fail_at(open, "unclosed '('");
      ++pos_;
      --nesting_;
      return "(" + (inner.empty() ? std::string("\"\"") : inner) + ")";
    }
    if (c == '[') {
      ++pos_;
      return set(char_class());
    }
    if (c == '.') {
      ++pos_;
      return set(kDot);
    }
    if (c == '^' || c == '$') fail("'^' and '$' are only supported at the ends");
    if (c == '*' || c == '+' || c == '?') fail("a quantifier with nothing to repeat");
    if (c == '\\') {
      ++pos_;
      Ranges r;
      if (escape(false, r)) return set(r);
      return literal(r[0].first);
    }
    ++pos_;
    return literal(c);
  }

  // After '\': a class escape (true, `out` the set) or one character (false, `out` = {cp}).
  bool escape(bool in_class, Ranges& out) {
    if (!more()) fail("a pattern ending in '\\'");
    const uint32_t e = peek();
    ++pos_;
    switch (e) {
      case 'd': out = kDigit; return true;
      case 'D': out = complement(kDigit); return true;
      case 'w': out = kWord; return true;
      case 'W': out = complement(kWord); return true;
      case 's': out = kSpace; return true;
      case 'S': out = complement(kSpace); return true;
      case 't': out = {{'\t', '\t'}}; return false;
      case 'n': out = {{'\n', '\n'}}; return false;
      case 'r': out = {{'\r', '\r'}}; return false;
      case 'f': out = {{'\f', '\f'}}; return false;
      case 'v': out = {{'\v', '\v'}}; return false;
      case '0': out = {{0, 0}}; return false;
      case 'x': case 'u': {
        const int n = e == 'x' ? 2 : 4;
        uint32_t v = 0;
        for (int k = 0; k < n; ++k) {
          const uint32_t h = peek();
          int d = -1;
          if (h >= '0' && h <= '9') d = static_cast<int>(h - '0');
          else if (h >= 'a' && h <= 'f') d = static_cast<int>(h - 'a' + 10);
          else if (h >= 'A' && h <= 'F') d = static_cast<int>(h - 'A' + 10);
          if (d < 0) fail(std::string("\\") + static_cast<char>(e) + " needs " + std::to_string(n) + " hex digits");
          v = v * 16 + static_cast<uint32_t>(d);
          ++pos_;
        }
        out = {{v, v}};
        return false;
      }
      case 'b':
        if (in_class) {
          out = {{'\b', '\b'}};
          return false;
        }
        fail("word boundaries (\\b) are not supported");
      default: break;
    }
    if ((e >= '0' && e <= '9') || (e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
      fail(std::string("the escape \\") + static_cast<char>(e) + " is not supported");
    }
    out = {{e, e}};  // escaped punctuation stands for itself
    return false;
  }

  // After '[': the members up to ']'.
  Ranges char_class() {
    const size_t open = pos_ - 1;
    bool negate = false;
    if (peek() == '^') {
      negate = true;
      ++pos_;
    }
    Ranges r;
    while (more() && peek() != ']') {
      uint32_t lo;
      if (peek() == '\\') {
        ++pos_;
        Ranges e;
        if (escape(true, e)) {
          r.insert(r.end(), e.begin(), e.end());
          continue;
        }
        lo = e[0].first;
      } else {
        lo = peek();
        ++pos_;
      }
      uint32_t hi = lo;
      if (peek() == '-' && peek(1) != ']' && pos_ + 1 < end_) {
        ++pos_;
        if (peek() == '\\') {
          ++pos_;
          Ranges e;
          if (escape(true, e)) fail("a class escape cannot end a range");
          hi = e[0].first;
        } else {
          hi = peek();
          ++pos_;
        }
        if (hi < lo) fail("a character range that ends before it starts");
      }
      r.emplace_back(lo, hi);
    }
    if (!more()) fail_at(open, "unclosed '['");
    ++pos_;
    return negate ? complement(r) : normalize(r);
  }

  const std::string& pattern_;
  std::vector<uint32_t> cps_;
  size_t pos_ = 0;
  size_t end_ = 0;
  int nesting_ = 0;
};

}  // namespace

std::string pattern_gbnf(const std::string& pattern) { return Converter(pattern).run(); }

}  // namespace pipellm::grammar

#include "engine/runtime/grammar/gbnf_parser.h"

#include <map>

#include "base/error.h"
#include "engine/runtime/grammar/grammar_checks.h"
#include "engine/runtime/grammar/utf8.h"

namespace pipellm::grammar {
namespace {

// Limits for grammars that arrive with requests: repetition counts past kMaxRepeat would only
// build huge rule chains ({m,n} copies the item m times and nests n - m optional rules), and
// kMaxElements bounds the whole grammar (repetitions of repetitions multiply); kMaxNesting
// bounds the parser's recursion on nested parentheses.
constexpr long kMaxRepeat = 10000;
constexpr size_t kMaxElements = size_t{1} << 22;
constexpr int kMaxNesting = 256;

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Parser {
 public:
  explicit Parser(std::string_view src) : src_(src) {}

  Grammar run(const std::string& root) {
    skip_space(true);
    while (pos_ < src_.size()) parse_rule();
    for (size_t i = 0; i < g_.rules.size(); ++i) {
      if (!defined_[i]) fail_at(first_use_[i], "rule '" + g_.names[i] + "' is used but never defined");
    }
    const int32_t r = g_.find(root);
    if (r < 0 || !defined_[static_cast<size_t>(r)]) throw FormatError("grammar: no '" + root + "' rule (the start rule)");
    g_.root = static_cast<uint32_t>(r);
    check_left_recursion(g_);
    return std::move(g_);
  }

 private:
  // --- positions and errors ---
  [[noreturn]] void fail_at(size_t at, const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < src_.size(); ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else if ((static_cast<uint8_t>(src_[i]) & 0xC0) != 0x80) {
        ++col;  // columns count characters, not UTF-8 bytes
      }
    }
    throw FormatError("grammar: line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + what);
  }
  [[noreturn]] void fail(const std::string& what) const { fail_at(pos_, what); }
  std::string found() const {
    if (pos_ >= src_.size()) return "the end of the grammar";
    const char c = src_[pos_];
    if (c == '\n' || c == '\r') return "a newline";
    return "'" + std::string(1, c) + "'";
  }
  char peek(size_t ahead = 0) const { return pos_ + ahead < src_.size() ? src_[pos_ + ahead] : '\0'; }
  bool at_end() const { return pos_ >= src_.size(); }

  // Spaces, tabs and comments; newlines too where a rule may continue.
  void skip_space(bool newline_ok) {
    while (!at_end()) {
      const char c = src_[pos_];
      if (c == ' ' || c == '\t' || (newline_ok && (c == '\r' || c == '\n'))) {
        ++pos_;
      } else if (c == '#') {
        while (!at_end() && src_[pos_] != '\r' && src_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }

  // --- symbols ---
  uint32_t symbol(const std::string& name, size_t at) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    const auto id = static_cast<uint32_t>(g_.rules.size());
    ids_.emplace(name, id);
    g_.rules.emplace_back();
    g_.names.push_back(name);
    defined_.push_back(false);
    first_use_.push_back(at);
    return id;
  }
  uint32_t generated_symbol(const std::string& parent) {
    const auto id = static_cast<uint32_t>(g_.rules.size());
    const std::string name = parent + "_" + std::to_string(id);
    ids_.emplace(name, id);
    g_.rules.emplace_back();
    g_.names.push_back(name);
    defined_.push_back(true);
    first_use_.push_back(pos_);
    return id;
  }

  std::string parse_name() {
    const size_t start = pos_;
    while (!at_end() && is_word_char(src_[pos_])) ++pos_;
    if (pos_ == start) fail("expected a rule name (letters, digits and '-'), found " + found());
    return std::string(src_.substr(start, pos_ - start));
  }

  long parse_count() {
    const size_t start = pos_;
    long v = 0;
    while (!at_end() && is_digit(src_[pos_])) {
      v = v * 10 + (src_[pos_] - '0');
      if (v > kMaxRepeat) fail_at(start, "repetition count above " + std::to_string(kMaxRepeat));
      ++pos_;
    }
    return v;
  }

  // --- characters ---
  uint32_t parse_hex(int digits) {
    const size_t start = pos_;
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = peek();
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else fail("escape needs " + std::to_string(digits) + " hex digits, found " + found());
      v = (v << 4) | static_cast<uint32_t>(d);
      ++pos_;
    }
    if (v > 0x10FFFF) fail_at(start, "code point above U+10FFFF");
    return v;
  }

  // One character of a literal or a class: an escape or a UTF-8 code point.
  uint32_t parse_char() {
    if (at_end()) fail("unexpected end of the grammar");
    if (src_[pos_] == '\\') {
      const size_t start = pos_;
      ++pos_;
      const char e = peek();
      ++pos_;
      switch (e) {
        case 'x': return parse_hex(2);
        case 'u': return parse_hex(4);
        case 'U': return parse_hex(8);
        case 't': return '\t';
        case 'r': return '\r';
        case 'n': return '\n';
        case '\\': case '"': case '[': case ']': case '-': case '^': return static_cast<uint32_t>(e);
        default:
          fail_at(start, std::string("unknown escape '\\") + (e ? std::string(1, e) : std::string()) +
                             "' (known: \\x.. \\u.... \\U........ \\t \\r \\n \\\\ \\\" \\[ \\] \\- \\^)");
      }
    }
    uint32_t cp = 0;
    if (!next_code_point(src_, pos_, cp)) fail("malformed UTF-8");
    return cp;
  }

  // --- rules ---
  void parse_rule() {
    const size_t name_at = pos_;
    const std::string name = parse_name();
    skip_space(false);
    if (src_.substr(pos_, 3) != "::=") {
      fail("expected '::=' after rule name '" + name + "', found " + found() +
           (peek() == '_' ? " (rule names use letters, digits and '-')" : ""));
    }
    pos_ += 3;
    const uint32_t id = symbol(name, name_at);
    if (defined_[id]) fail_at(name_at, "rule '" + name + "' is defined twice");
    defined_[id] = true;
    first_use_[id] = name_at;
    skip_space(true);
    parse_alternates(name, id, false);
    if (peek() == '\r') {
      pos_ += peek(1) == '\n' ? 2 : 1;
    } else if (peek() == '\n') {
      ++pos_;
    } else if (!at_end()) {
      fail(peek() == ')' ? "unmatched ')'" : "expected a newline or the end of rule '" + name + "', found " + found());
    }
    skip_space(true);
  }

  void parse_alternates(const std::string& name, uint32_t id, bool nested) {
    std::vector<Element> rule;
    parse_sequence(name, rule, nested);
    while (peek() == '|') {
      rule.push_back({ElementType::Alt, 0});
      ++pos_;
      skip_space(true);
      parse_sequence(name, rule, nested);
    }
    rule.push_back({ElementType::End, 0});
    g_.rules[id] = std::move(rule);
  }

  void parse_sequence(const std::string& name, std::vector<Element>& rule, bool nested) {
    size_t last_start = rule.size();  // where the last item's elements begin (what a repetition repeats)
    bool have_item = false;
    while (!at_end()) {
      const char c = src_[pos_];
      const size_t item_at = pos_;
      if (c == '"') {
        ++pos_;
        last_start = rule.size();
        while (peek() != '"') {
          if (at_end() || peek() == '\n') fail_at(item_at, "unterminated string literal");
          rule.push_back({ElementType::Char, parse_char()});
        }
        ++pos_;
        have_item = true;
      } else if (c == '[') {
        ++pos_;
        last_start = rule.size();
        parse_class(rule, item_at);
        have_item = true;
      } else if (is_word_char(c)) {
        const std::string ref = parse_name();
        last_start = rule.size();
        rule.push_back({ElementType::RuleRef, symbol(ref, item_at)});
        have_item = true;
      } else if (c == '(') {
        if (++nesting_ > kMaxNesting) fail("parentheses nested deeper than " + std::to_string(kMaxNesting));
        ++pos_;
        skip_space(true);
        const uint32_t sub = generated_symbol(name);
        parse_alternates(name, sub, true);
        if (peek() != ')') fail_at(item_at, "unclosed '(': expected ')' before " + found());
        ++pos_;
        --nesting_;
        last_start = rule.size();
        rule.push_back({ElementType::RuleRef, sub});
        have_item = true;
      } else if (c == '.') {
        ++pos_;
        last_start = rule.size();
        rule.push_back({ElementType::CharAny, 0});
        have_item = true;
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (!have_item) fail(std::string("'") + c + "' must follow an item to repeat");
        ++pos_;
        long lo = 0, hi = -1;
        if (c == '+') lo = 1;
        if (c == '?') hi = 1;
        if (c == '{') parse_braces(lo, hi);
        repeat(name, rule, last_start, lo, hi);
      } else if (c == '<') {
        fail("token references (<[id]>, <|name|>) are not supported");
      } else {
        break;
      }
      skip_space(nested);
    }
  }

  // "[...]" after the '['.
  void parse_class(std::vector<Element>& rule, size_t open_at) {
    const size_t first = rule.size();
    ElementType start = ElementType::Char;
    if (peek() == '^') {
      ++pos_;
      start = ElementType::CharNot;
    }
    while (peek() != ']') {
      if (at_end()) fail_at(open_at, "unclosed '[': expected ']'");
      const uint32_t lo = parse_char();
      rule.push_back({rule.size() == first ? start : ElementType::CharAlt, lo});
      if (peek() == '-' && peek(1) != ']') {
        ++pos_;
        const size_t hi_at = pos_;
        const uint32_t hi = parse_char();
        if (hi < lo) fail_at(hi_at, "character range ends before it starts");
        rule.push_back({ElementType::CharRangeUpper, hi});
      }
    }
    ++pos_;
    if (rule.size() == first) fail_at(open_at, "empty character class");
  }

  // "{m}", "{m,}", "{m,n}", "{,n}" after the '{'.
  void parse_braces(long& lo, long& hi) {
    skip_space(false);
    const bool have_lo = is_digit(peek());
    if (have_lo) lo = parse_count();
    skip_space(false);
    if (peek() == '}' && have_lo) {
      hi = lo;
    } else if (peek() == ',') {
      ++pos_;
      skip_space(false);
      if (is_digit(peek())) {
        const size_t hi_at = pos_;
        hi = parse_count();
        if (hi < lo) fail_at(hi_at, "repetition maximum below the minimum");
      } else if (!have_lo) {
        fail("'{,}' needs a count");
      }
      skip_space(false);
      if (peek() != '}') fail("expected '}' closing the repetition, found " + found());
    } else {
      fail(std::string(have_lo ? "expected ',' or '}'" : "expected a count") + " in the repetition, found " + found());
    }
    ++pos_;
  }

  // Rewrites the item rule[last_start:] repeated lo..hi times (hi < 0: unbounded):
  //   S{m,n} -> S x m, then R(n-m) where R(k) ::= S R(k-1) | ... and R(1) ::= S |
  //   S{m,}  -> S x m, then R where R ::= S R |
  // Chained optional rules (not n - m copies of "S?") keep the stacks small: each one either
  // takes another S or ends the repetition.
  void repeat(const std::string& name, std::vector<Element>& rule, size_t last_start, long lo, long hi) {
    const std::vector<Element> item(rule.begin() + static_cast<long>(last_start), rule.end());
    const size_t n_opt_rules = hi < 0 ? 1 : static_cast<size_t>(hi - lo);
    elements_ += item.size() * (static_cast<size_t>(lo) + n_opt_rules);
    if (elements_ > kMaxElements) fail("the grammar grows past " + std::to_string(kMaxElements) + " elements (repetitions too large)");
    rule.resize(last_start);
    for (long i = 0; i < lo; ++i) rule.insert(rule.end(), item.begin(), item.end());
    if (hi >= 0 && hi == lo) return;
    const long n_opt = hi < 0 ? 1 : hi - lo;
    uint32_t prev = 0;
    for (long i = 0; i < n_opt; ++i) {
      const uint32_t id = generated_symbol(name);
      std::vector<Element> r = item;
      if (hi < 0) r.push_back({ElementType::RuleRef, id});
      else if (i > 0) r.push_back({ElementType::RuleRef, prev});
      r.push_back({ElementType::Alt, 0});
      r.push_back({ElementType::End, 0});
      g_.rules[id] = std::move(r);
      prev = id;
    }
    rule.push_back({ElementType::RuleRef, prev});
  }

  std::string_view src_;
  size_t pos_ = 0;
  Grammar g_;
  std::map<std::string, uint32_t> ids_;
  std::vector<bool> defined_;
  std::vector<size_t> first_use_;  // where each rule was first named (for "never defined")
  int nesting_ = 0;                // open parentheses
  size_t elements_ = 0;            // elements added by repetitions so far
};

}  // namespace

Grammar parse_gbnf(std::string_view text, const std::string& root) { return Parser(text).run(root); }

}  // namespace pipellm::grammar

#include "engine/tokenizer/jinja/lexer.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "engine/tokenizer/jinja/pystr.h"

namespace pipellm::jinja {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// Jinja reads the source with \r\n and \r turned into \n and, unless keep_trailing_newline, one
// trailing newline removed.
std::string normalize(const std::string& source, bool keep_trailing_newline) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!keep_trailing_newline && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  Lexer(const std::string& source, const LexOptions& o) : src_(normalize(source, o.keep_trailing_newline)), o_(o) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;  // the previous tag's match ended a line (for lstrip_blocks)
    while (pos < src_.size()) {
      const size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        emit(TokenType::kText, src_.substr(pos), pos);
        break;
      }
      const char kind = src_[tag + 1];
      size_t p = tag + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      const size_t raw_body = kind == '%' ? raw_begin_end(p) : std::string::npos;

      std::string text = src_.substr(pos, tag - pos);
      strip_before_tag(text, sign, kind != '{', line_starting);
      if (!text.empty()) emit(TokenType::kText, std::move(text), pos);

      size_t end;
      if (raw_body != std::string::npos) {
        end = lex_raw(tag, raw_body);
      } else if (kind == '#') {
        end = skip_comment(tag, p);
      } else {
        end = lex_tag(tag, p, kind == '%');
      }
      pos = end;
      line_starting = end > 0 && src_[end - 1] == '\n';
    }
    emit(TokenType::kEnd, "", src_.size());
    return std::move(out_);
  }

 private:
  Pos pos_at(size_t off) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    const size_t line = static_cast<size_t>(it - line_starts_.begin());
    return {static_cast<int>(line), static_cast<int>(off - line_starts_[line - 1] + 1)};
  }

  void emit(TokenType t, std::string text, size_t off) {
    Token tok;
    tok.type = t;
    tok.text = std::move(text);
    tok.pos = pos_at(off);
    out_.push_back(std::move(tok));
  }

  bool at(size_t p, const char* s) const { return src_.compare(p, std::char_traits<char>::length(s), s) == 0; }

  // Python's \s* from p.
  size_t skip_space(size_t p) const {
    while (p < src_.size()) {
      size_t n;
      if (!pystr::is_space(pystr::decode_at(src_, p, &n))) break;
      p += n;
    }
    return p;
  }

  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  // Whitespace control of the text before a tag: `-` strips all trailing whitespace; otherwise,
  // with lstrip_blocks, a block or comment tag preceded on its line only by whitespace takes
  // that whitespace away ("line" also when the previous tag's newline started it).
  void strip_before_tag(std::string& text, char sign, bool block_or_comment, bool line_starting) const {
    if (sign == '-') {
      text = pystr::strip(text, nullptr, false, true);
      return;
    }
    if (sign == '+' || !o_.lstrip_blocks || !block_or_comment) return;
    const size_t nl = text.rfind('\n');
    const size_t l = nl == std::string::npos ? 0 : nl + 1;
    if ((l == 0 && !line_starting) || l == text.size()) return;
    if (pystr::strip(text.substr(l), nullptr, true, false).empty()) text.resize(l);
  }

  // After `{%` and its sign: the end of `\s*raw\s*(-%}\s*|%})`, or npos when this is not raw.
  size_t raw_begin_end(size_t p) const {
    size_t q = skip_space(p);
    if (!at(q, "raw")) return std::string::npos;
    q = skip_space(q + 3);
    if (at(q, "-%}")) return skip_space(q + 3);
    if (at(q, "%}")) return q + 2;
    return std::string::npos;
  }

  // The raw body up to {% endraw %} is text, whitespace-controlled by the endraw tag.
  size_t lex_raw(size_t tag, size_t body) {
    for (size_t i = src_.find("{%", body); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t q = i + 2;
      const char sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q++] : 0;
      q = skip_space(q);
      if (!at(q, "endraw")) continue;
      q = skip_space(q + 6);
      size_t end;
      if (at(q, "+%}")) {
        end = q + 3;
      } else if (at(q, "-%}")) {
        end = skip_space(q + 3);
      } else if (at(q, "%}")) {
        end = q + 2;
        if (o_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
      } else {
        continue;
      }
      std::string text = src_.substr(body, i - body);
      strip_before_tag(text, sign, true, body > 0 && src_[body - 1] == '\n');
      if (!text.empty()) emit(TokenType::kText, std::move(text), body);
      return end;
    }
    fail(pos_at(tag), "missing {% endraw %} for this {% raw %}");
  }

  size_t skip_comment(size_t tag, size_t p) const {
    const size_t j = src_.find("#}", p);
    if (j == std::string::npos) fail(pos_at(tag), "missing end of comment tag '#}'");
    if (j > p && src_[j - 1] == '-') return skip_space(j + 2);
    if (j > p && src_[j - 1] == '+') return j + 2;
    size_t end = j + 2;
    if (o_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
    return end;
  }

  // The tokens of a {{ }} or {% %} tag; returns the offset after its end (and the whitespace the
  // end's control consumes). Inside brackets `}}` and `%}` are operators, as in Jinja.
  size_t lex_tag(size_t tag, size_t p, bool block) {
    emit(block ? TokenType::kBlockBegin : TokenType::kVarBegin, "", tag);
    std::string brackets;  // the closers expected, innermost last
    while (true) {
      if (brackets.empty()) {
        size_t end = std::string::npos;
        if (block) {
          if (at(p, "+%}")) {
            end = p + 3;
          } else if (at(p, "-%}")) {
            end = skip_space(p + 3);
          } else if (at(p, "%}")) {
            end = p + 2;
            if (o_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
          }
        } else if (at(p, "-}}")) {
          end = skip_space(p + 3);
        } else if (at(p, "}}")) {
          end = p + 2;
        }
        if (end != std::string::npos) {
          emit(block ? TokenType::kBlockEnd : TokenType::kVarEnd, "", p);
          return end;
        }
      }
      if (p >= src_.size()) {
        fail(pos_at(tag), block ? "unclosed block tag: missing '%}'" : "unclosed expression: missing '}}'");
      }
      const size_t q = skip_space(p);
      if (q != p) {
        p = q;
        continue;
      }
      p = lex_token(p, brackets);
    }
  }

  size_t lex_token(size_t p, std::string& brackets) {
    const char c = src_[p];
    if (is_digit(c)) return lex_number(p);
    if (is_name_start(c)) {
      size_t q = p;
      while (q < src_.size() && is_name_char(src_[q])) ++q;
      emit(TokenType::kName, src_.substr(p, q - p), p);
      return q;
    }
    if (c == '\'' || c == '"') return lex_string(p);
    static const char* const kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : kTwo) {
      if (at(p, op)) {
        emit(TokenType::kOperator, op, p);
        return p + 2;
      }
    }
    static const std::string kOne = "+-/*%~[](){}<>=.:|,;";
    if (kOne.find(c) == std::string::npos) {
      fail(pos_at(p), std::string("unexpected character '") + c + "' in a tag");
    }
    if (c == '(' || c == '[' || c == '{') {
      brackets += c == '(' ? ')' : c == '[' ? ']' : '}';
    } else if (c == ')' || c == ']' || c == '}') {
      if (brackets.empty()) fail(pos_at(p), std::string("unexpected '") + c + "'");
      if (brackets.back() != c) {
        fail(pos_at(p), std::string("unexpected '") + c + "', expected '" + brackets.back() + "'");
      }
      brackets.pop_back();
    }
    emit(TokenType::kOperator, std::string(1, c), p);
    return p + 1;
  }

  // Digits with single underscores between them, from p; returns the end.
  size_t digits(size_t p) const {
    while (p < src_.size() && is_digit(src_[p])) {
      ++p;
      if (p + 1 < src_.size() && src_[p] == '_' && is_digit(src_[p + 1])) ++p;
    }
    return p;
  }

  size_t lex_number(size_t p) {
    const auto bad = [&]() { fail(pos_at(p), "number literal out of range: " + src_.substr(p, 32)); };
    if (src_[p] == '0' && p + 1 < src_.size() && std::string("xXoObB").find(src_[p + 1]) != std::string::npos) {
      const int base = (src_[p + 1] == 'x' || src_[p + 1] == 'X') ? 16 : (src_[p + 1] == 'o' || src_[p + 1] == 'O') ? 8 : 2;
      size_t q = p + 2;
      std::string text;
      while (q < src_.size() && (std::isxdigit(static_cast<unsigned char>(src_[q])) || src_[q] == '_')) {
        if (src_[q] != '_') text += src_[q];
        ++q;
      }
      errno = 0;
      char* endp = nullptr;
      const long long v = std::strtoll(text.c_str(), &endp, base);
      if (text.empty() || errno == ERANGE || *endp != '\0') bad();
      Token tok;
      tok.type = TokenType::kInt;
      tok.ival = v;
      tok.pos = pos_at(p);
      out_.push_back(tok);
      return q;
    }
    size_t q = digits(p);
    bool is_float = false;
    if (p == 0 || src_[p - 1] != '.') {  // Jinja: no float right after a dot (x.0.1 is x[0][1])
      if (q + 1 < src_.size() && src_[q] == '.' && is_digit(src_[q + 1])) {
        q = digits(q + 1);
        is_float = true;
      }
      if (q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
        size_t r = q + 1;
        if (r < src_.size() && (src_[r] == '+' || src_[r] == '-')) ++r;
        if (r < src_.size() && is_digit(src_[r])) {
          q = digits(r);
          is_float = true;
        }
      }
    }
    std::string text;
    for (size_t i = p; i < q; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    Token tok;
    tok.pos = pos_at(p);
    errno = 0;
    if (is_float) {
      tok.type = TokenType::kFloat;
      tok.fval = std::strtod(text.c_str(), nullptr);
    } else {
      tok.type = TokenType::kInt;
      tok.ival = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) bad();
    }
    out_.push_back(tok);
    return q;
  }

  size_t lex_string(size_t p) {
    const char quote = src_[p];
    size_t q = p + 1;
    while (q < src_.size() && src_[q] != quote) q += src_[q] == '\\' ? 2 : 1;
    if (q >= src_.size()) fail(pos_at(p), "unterminated string literal");
    std::string value;
    size_t bad = 0;
    if (!pystr::unescape(src_.substr(p + 1, q - p - 1), &value, &bad)) {
      fail(pos_at(p + 1 + bad), "invalid escape sequence in string literal");
    }
    emit(TokenType::kString, std::move(value), p);
    return q + 1;
  }

  std::string src_;
  LexOptions o_;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> tokenize(const std::string& source, const LexOptions& options) {
  return Lexer(source, options).run();
}

}  // namespace pipellm::jinja

#include "engine/tokenizer/pretokenizer_custom.h"

#include "engine/tokenizer/unicode_text.h"

namespace pipellm::tok {

namespace {

// A view of one piece: positions outside [begin, end) read as "no character" (flags 0).
class Piece {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFF;
  Piece(const std::vector<uint32_t>& cpts, size_t begin, size_t end)
      : cpts_(cpts), begin_(begin), end_(end), last_(begin) {}

  uint32_t cpt(size_t pos) const { return pos >= begin_ && pos < end_ ? cpts_[pos] : kNone; }
  CptFlags flags(size_t pos) const { return pos >= begin_ && pos < end_ ? cpt_flags(cpts_[pos]) : CptFlags{}; }
  size_t end() const { return end_; }

  // Closes the word [last, to) if it is not empty.
  void emit(size_t to, std::vector<size_t>& out) {
    if (to > last_) out.push_back(to - last_);
    last_ = to;
  }

 private:
  const std::vector<uint32_t>& cpts_;
  size_t begin_, end_, last_;
};

bool is_cr_or_lf(uint32_t c) { return c == '\r' || c == '\n'; }

// 's 't 're 've 'm 'll 'd at pos: returns the match length (0 when none).
size_t contraction_len(const Piece& p, size_t pos, bool ignore_case) {
  if (p.cpt(pos) != '\'' || pos + 1 >= p.end()) return 0;
  auto low = [&](size_t i) { return ignore_case ? cpt_to_lower(p.cpt(i)) : p.cpt(i); };
  const uint32_t a = low(pos + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (pos + 2 >= p.end()) return 0;
  const uint32_t b = low(pos + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

bool is_other(CptFlags f) { return !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.any(); }

}  // namespace

std::vector<size_t> split_gpt2(const std::vector<uint32_t>& cpts, const std::vector<size_t>& pieces) {
  std::vector<size_t> out;
  out.reserve(pieces.size());
  size_t start = 0;
  for (size_t len : pieces) {
    Piece p(cpts, start, start + len);
    size_t pos = start;
    while (pos < p.end()) {
      const uint32_t c = p.cpt(pos);
      if (size_t n = contraction_len(p, pos, false)) {
        pos += n;
        p.emit(pos, out);
        continue;
      }
      // An optional leading space, then a run of letters / numbers / other symbols.
      const bool space = c == ' ';
      const CptFlags lead = space ? p.flags(pos + 1) : p.flags(pos);
      if (lead.is_letter() || lead.is_number() || is_other(lead)) {
        pos += space ? 1 : 0;
        auto same = [&](CptFlags f) {
          return lead.is_letter() ? f.is_letter() : lead.is_number() ? f.is_number() : is_other(f);
        };
        while (same(p.flags(pos))) ++pos;
        p.emit(pos, out);
        continue;
      }
      size_t n_ws = 0;
      while (p.flags(pos + n_ws).is_whitespace()) ++n_ws;
      if (n_ws > 1 && pos + n_ws < p.end()) {  // \s+(?!\S): leave the last space to the next word
        pos += n_ws - 1;
      } else if (n_ws > 0) {
        pos += n_ws;
      } else {
        pos += 1;
      }
      p.emit(pos, out);
    }
    start += len;
  }
  return out;
}

std::vector<size_t> split_llama3(const std::vector<uint32_t>& cpts, const std::vector<size_t>& pieces,
                                 size_t max_digits) {
  std::vector<size_t> out;
  out.reserve(pieces.size());
  size_t start = 0;
  for (size_t len : pieces) {
    Piece p(cpts, start, start + len);
    size_t pos = start;
    while (pos < p.end()) {
      const uint32_t c = p.cpt(pos);
      const CptFlags f = p.flags(pos);
      if (size_t n = contraction_len(p, pos, true)) {
        pos += n;
        p.emit(pos, out);
        continue;
      }
      // [^\r\n\p{L}\p{N}]?\p{L}+
      if (!is_cr_or_lf(c) && !f.is_number() && (f.is_letter() || p.flags(pos + 1).is_letter())) {
        ++pos;
        while (p.flags(pos).is_letter()) ++pos;
        p.emit(pos, out);
        continue;
      }
      // \p{N}{1,3}
      if (f.is_number()) {
        size_t run = 0;
        while (p.flags(pos).is_number()) {
          ++pos;
          if (++run == max_digits) {
            p.emit(pos, out);
            run = 0;
          }
        }
        p.emit(pos, out);
        continue;
      }
      // " ?[^\s\p{L}\p{N}]+[\r\n]*" (the current character only has to exist)
      const bool space = c == ' ';
      CptFlags g = space ? p.flags(pos + 1) : f;
      if (!(g.is_whitespace() || g.is_letter() || g.is_number()) && f.any()) {
        pos += space ? 1 : 0;
        while (is_other(g)) g = p.flags(++pos);
        while (is_cr_or_lf(p.cpt(pos))) ++pos;
        p.emit(pos, out);
        continue;
      }
      // \s*[\r\n]+ | \s+(?!\S) | \s+
      size_t n_ws = 0, after_last_crlf = 0;
      while (p.flags(pos + n_ws).is_whitespace()) {
        if (is_cr_or_lf(p.cpt(pos + n_ws))) after_last_crlf = pos + n_ws + 1;
        ++n_ws;
      }
      if (after_last_crlf > 0) {
        pos = after_last_crlf;
      } else if (n_ws > 1 && pos + n_ws < p.end()) {
        pos += n_ws - 1;
      } else if (n_ws > 0) {
        pos += n_ws;
      } else {
        pos += 1;
      }
      p.emit(pos, out);
    }
    start += len;
  }
  return out;
}

}  // namespace pipellm::tok

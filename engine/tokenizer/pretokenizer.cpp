#include "engine/tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "base/error.h"
#include "engine/tokenizer/pretokenizer_custom.h"
#include "engine/tokenizer/unicode_text.h"

namespace pipellm::tok {

// Owns a compiled (and, where available, JIT-compiled) PCRE2 pattern.
struct CompiledRegex {
  pcre2_code* code = nullptr;
  ~CompiledRegex() { pcre2_code_free(code); }
};

namespace {

// The category patterns llama.cpp understands, the byte each category collapses to, and the ASCII
// members of the category (which stay themselves in the collapsed text).
struct CategoryClass {
  const char* name;
  char byte;
  const char* ascii;
};
constexpr CategoryClass kCategories[] = {
    {"\\p{N}", '\xD1', "0-9"},
    {"\\p{L}", '\xD2', "A-Za-z"},
    {"\\p{P}", '\xD3', "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"},
    {"\\p{M}", '\xD4', ""},
    {"\\p{S}", '\xD5', "\\$\\+<->^`\\|"},
    {"\\p{Lu}", '\xD2', "A-Za-z"},
    {"\\p{Ll}", '\xD2', "A-Za-z"},
    {"\\p{Lt}", '\xD2', "A-Za-z"},
    {"\\p{Lm}", '\xD2', "A-Za-z"},
    {"\\p{Lo}", '\xD2', "A-Za-z"},
};

bool uses_categories(const std::string& re) {
  return std::any_of(std::begin(kCategories), std::end(kCategories),
                     [&](const CategoryClass& c) { return re.find(c.name) != std::string::npos; });
}

// Rewrites each \p{X} into a class over its collapsed byte and its ASCII members.
std::string collapse_pattern(const std::string& re) {
  std::string out;
  bool inside = false;
  for (size_t i = 0; i < re.size(); ++i) {
    const char ch = re[i];
    if (ch == '[' && (i == 0 || re[i - 1] != '\\')) {
      out += ch;
      inside = true;
      continue;
    }
    if (inside && ch == ']' && re[i - 1] != '\\') {
      out += ch;
      inside = false;
      continue;
    }
    if (ch == '\\' && i + 3 < re.size() && re[i + 1] == 'p' && re[i + 2] == '{') {
      const size_t close = re.find('}', i + 3);
      if (close != std::string::npos) {
        const std::string name = re.substr(i, close - i + 1);
        const CategoryClass* cat = nullptr;
        for (const auto& c : kCategories) {
          if (name == c.name) cat = &c;
        }
        if (cat != nullptr) {
          if (!inside) out += '[';
          out += cat->byte;
          out += cat->ascii;
          if (!inside) out += ']';
          i = close;
          continue;
        }
      }
    }
    out += ch;
  }
  return out;
}

std::unique_ptr<CompiledRegex> compile(const std::string& pattern, uint32_t options, const std::string& shown) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  // $ means end of subject only, as in ECMAScript (llama.cpp evaluates these with std::regex).
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options | PCRE2_DOLLAR_ENDONLY, &err, &err_off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    throw FormatError("tokenizer: pre-tokenizer regex '" + shown + "' does not compile at offset " +
                      std::to_string(err_off) + ": " + reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is absent
  auto re = std::make_unique<CompiledRegex>();
  re->code = code;
  return re;
}

// Runs `re` over each piece of `subject` (piece boundaries given in subject units by `bounds`);
// returns the refined pieces in subject units.
std::vector<size_t> split_with_regex(const CompiledRegex& re, std::string_view subject,
                                     const std::vector<size_t>& bounds) {
  std::vector<size_t> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re.code, nullptr);
  size_t start = 0;
  for (size_t len : bounds) {
    const auto* base = reinterpret_cast<PCRE2_SPTR>(subject.data() + start);
    size_t pos = 0, last = 0;
    while (pos <= len) {
      const int rc = pcre2_match(re.code, base, len, pos, 0, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t m0 = ov[0], m1 = ov[1];
      if (m1 == m0) {  // empty match: no word, try one unit further
        pos = m0 + 1;
        continue;
      }
      if (m0 > last) out.push_back(m0 - last);
      out.push_back(m1 - m0);
      last = pos = m1;
    }
    if (last < len) out.push_back(len - last);
    start += len;
  }
  pcre2_match_data_free(md);
  return out;
}

}  // namespace

PreTokenizer::PreTokenizer(const std::vector<std::string>& regexes, bool use_custom) {
  constexpr std::string_view kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
  constexpr std::string_view kLlama3Pattern =
      R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  constexpr std::string_view kQwen2Pattern =
      R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  for (const auto& r : regexes) {
    if (use_custom && r == kGpt2Pattern) {
      steps_.push_back({Kind::kGpt2, nullptr});
    } else if (use_custom && r == kLlama3Pattern) {
      steps_.push_back({Kind::kLlama3, nullptr});
    } else if (use_custom && r == kQwen2Pattern) {  // same result as the regex, several times faster
      steps_.push_back({Kind::kQwen2, nullptr});
    } else if (uses_categories(r)) {
      need_collapsed_ = true;
      steps_.push_back({Kind::kCollapsed, compile(collapse_pattern(r), 0, r)});
    } else {
      // Whole code points; invalid sequences (lone surrogates) simply never match.
      steps_.push_back({Kind::kCodepoint, compile(r, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, r)});
    }
  }
}

PreTokenizer::~PreTokenizer() = default;

std::vector<size_t> PreTokenizer::split(const std::vector<uint32_t>& cpts) const {
  std::vector<size_t> pieces{cpts.size()};
  if (cpts.empty()) return {};

  // One byte per code point: ASCII as is, other whitespace as VT, the rest by category.
  std::string collapsed;
  if (need_collapsed_) {
    collapsed.resize(cpts.size());
    for (size_t i = 0; i < cpts.size(); ++i) {
      const uint32_t c = cpts[i];
      if (c < 128) {
        collapsed[i] = static_cast<char>(c);
        continue;
      }
      const CptFlags f = cpt_flags(c);
      char b = '\xD0';
      if (f.is_whitespace()) b = '\x0B';
      else if (f.category() == CptFlags::kNumber) b = '\xD1';
      else if (f.category() == CptFlags::kLetter) b = '\xD2';
      else if (f.category() == CptFlags::kPunct) b = '\xD3';
      else if (f.category() == CptFlags::kMark) b = '\xD4';
      else if (f.category() == CptFlags::kSymbol) b = '\xD5';
      collapsed[i] = b;
    }
  }

  for (const auto& step : steps_) {
    switch (step.kind) {
      case Kind::kGpt2:
        pieces = split_gpt2(cpts, pieces);
        break;
      case Kind::kLlama3:
        pieces = split_llama3(cpts, pieces);
        break;
      case Kind::kQwen2:
        pieces = split_llama3(cpts, pieces, 1);
        break;
      case Kind::kCollapsed:
        pieces = split_with_regex(*step.re, collapsed, pieces);
        break;
      case Kind::kCodepoint: {
        // UTF-8 text (non-ASCII whitespace as VT); piece lengths convert between units.
        std::string text;
        std::vector<size_t> byte_at(cpts.size() + 1, 0);
        for (size_t i = 0; i < cpts.size(); ++i) {
          byte_at[i] = text.size();
          const uint32_t c = cpts[i];
          append_utf8(text, c > 0x7F && cpt_flags(c).is_whitespace() ? 0x0B : c);
        }
        byte_at[cpts.size()] = text.size();
        std::vector<size_t> byte_pieces;
        size_t at = 0;
        for (size_t len : pieces) {
          byte_pieces.push_back(byte_at[at + len] - byte_at[at]);
          at += len;
        }
        byte_pieces = split_with_regex(*step.re, text, byte_pieces);
        pieces.clear();
        size_t b = 0, cpt_index = 0;
        for (size_t blen : byte_pieces) {
          b += blen;
          const size_t end = static_cast<size_t>(std::lower_bound(byte_at.begin(), byte_at.end(), b) - byte_at.begin());
          pieces.push_back(end - cpt_index);
          cpt_index = end;
        }
        break;
      }
    }
  }
  return pieces;
}

}  // namespace pipellm::tok

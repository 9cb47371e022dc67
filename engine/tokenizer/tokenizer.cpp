#include "engine/tokenizer/tokenizer.h"

#include <cstdlib>

#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/special_tokens.h"
#include "engine/tokenizer/spm_model.h"
#include "engine/tokenizer/unicode_text.h"
#include "engine/tokenizer/vocab.h"

namespace pipellm {

using tok::VocabType;

struct Tokenizer::Impl {
  std::unique_ptr<tok::Vocab> vocab;
  std::unique_ptr<tok::SpecialTokenMatcher> specials;
  std::unique_ptr<tok::SpmModel> spm;
  std::unique_ptr<tok::BpeModel> bpe;
  std::unique_ptr<tok::PreTokenizer> pretok;
  tok::ByteLevelMap bytes;
  std::vector<std::string> piece_plain;    // decode(): control/unknown tokens render as ""
  std::vector<std::string> piece_special;  // token_to_piece(): every token rendered
  std::string empty;

  void encode_bpe_text(std::string_view text, std::vector<int32_t>& out, tok::BpeScratch& scratch) const;
  void build_pieces();
};

namespace {

const char kSpaceMark[] = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

std::string escape_spaces(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (char c : s) {
    if (c == ' ') out += kSpaceMark;
    else out += c;
  }
  return out;
}

std::string unescape_spaces(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 3, kSpaceMark) == 0) {
      out += ' ';
      i += 3;
    } else {
      out += s[i++];
    }
  }
  return out;
}

// "<0xAB>" -> 0xAB (the token text of a byte token).
char byte_of_token(const std::string& text) {
  const std::string hex = text.size() >= 5 ? text.substr(3, 2) : std::string();
  return static_cast<char>(std::strtol(hex.c_str(), nullptr, 16));
}

}  // namespace

void Tokenizer::Impl::build_pieces() {
  const auto& v = *vocab;
  const int32_t n = v.n_tokens();
  piece_plain.resize(n);
  piece_special.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    const uint32_t attr = v.attr[id];
    const std::string& text = v.text[id];
    std::string piece;
    if (attr & (tok::kAttrUnknown | tok::kAttrControl | tok::kAttrUserDefined)) {
      piece = text;
    } else if (attr & tok::kAttrNormal) {
      if (v.type == VocabType::kSpm) {
        piece = unescape_spaces(text);
      } else {
        // Byte-level decoding; a character outside the byte map is shown as llama.cpp shows it.
        for (uint32_t cpt : tok::decode_utf8_lenient(text)) {
          const int b = bytes.decode(cpt);
          if (b >= 0) {
            piece += static_cast<char>(b);
            continue;
          }
          std::string utf8;
          tok::append_utf8(utf8, cpt);
          piece += "[UNK_BYTE_0x";
          for (char c : utf8) {
            static const char* kHex = "0123456789abcdef";
            piece += kHex[static_cast<uint8_t>(c) >> 4];
            piece += kHex[static_cast<uint8_t>(c) & 15];
          }
          piece += text + "]";
        }
      }
    } else if (attr & tok::kAttrByte) {
      piece = std::string(1, byte_of_token(text));
    }
    piece_special[id] = piece;
    piece_plain[id] = (attr & (tok::kAttrUnknown | tok::kAttrControl)) ? std::string() : piece;
  }
}

void Tokenizer::Impl::encode_bpe_text(std::string_view text, std::vector<int32_t>& out,
                                      tok::BpeScratch& scratch) const {
  const std::vector<uint32_t> cpts = tok::decode_utf8_lenient(text);
  const std::vector<size_t> words = pretok->split(cpts);
  std::string raw, encoded;
  size_t at = 0;
  for (size_t len : words) {
    raw.clear();
    encoded.clear();
    for (size_t i = at; i < at + len; ++i) tok::append_utf8(raw, cpts[i]);
    for (char c : raw) encoded += bytes.encode(static_cast<uint8_t>(c));
    bpe->encode_word(raw, encoded, out, scratch);
    at += len;
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  auto impl = std::make_unique<Impl>();
  impl->vocab = tok::load_vocab(f);
  const auto& v = *impl->vocab;
  impl->specials = std::make_unique<tok::SpecialTokenMatcher>(v);
  if (v.type == VocabType::kSpm) {
    impl->spm = std::make_unique<tok::SpmModel>(v);
  } else {
    impl->pretok = std::make_unique<tok::PreTokenizer>(v.pre_regexes);
    impl->bpe = std::make_unique<tok::BpeModel>(v);
  }
  impl->build_pieces();
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const auto& v = *impl_->vocab;
  std::vector<int32_t> out;
  const std::vector<tok::Fragment> frags = impl_->specials->partition(text, parse_special);
  if (add_special && v.add_bos) out.push_back(v.bos);
  if (v.type == VocabType::kSpm) {
    bool prev_special = true;  // the first text fragment gets the space prefix too
    for (const auto& fr : frags) {
      if (fr.token >= 0) {
        out.push_back(fr.token);
        prev_special = true;
        continue;
      }
      std::string piece = v.add_space_prefix && prev_special ? " " : "";
      piece += text.substr(fr.offset, fr.length);
      impl_->spm->encode(escape_spaces(piece), out);
      prev_special = false;
    }
  } else {
    tok::BpeScratch scratch;
    for (const auto& fr : frags) {
      if (fr.token >= 0) out.push_back(fr.token);
      else impl_->encode_bpe_text(text.substr(fr.offset, fr.length), out, scratch);
    }
  }
  if (add_special && v.add_eos) out.push_back(v.eos);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  bool strip = strips_first_space();
  for (int32_t id : ids) {
    const std::string& p = render_piece(id);
    out.append(p, strip && !p.empty() && p[0] == ' ' ? 1 : 0, std::string::npos);
    strip = false;
  }
  return cleans_spaces() ? clean_spaces(std::move(out)) : out;
}

std::string Tokenizer::clean_spaces(std::string s) const {
  // llama.cpp's three passes, done in place on one buffer (later passes see earlier edits).
  auto pass = [&s](auto&& step) {
    const size_t n = s.size();
    size_t total = n ? 1 : 0;
    for (size_t i = 1; i < n; ++i) step(i, n, total);
    s.resize(total);
  };
  pass([&s](size_t& i, size_t, size_t& total) {
    const char x = s[i];
    if (s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --total;
    s[total++] = x;
  });
  pass([&s](size_t& i, size_t n, size_t& total) {
    const char x = s[i];
    if (x == '\'' && i + 1 < n && s[i - 1] == ' ' && s[i + 1] == ' ') {
      --total;        // the space before
      s[++i] = '\0';  // and the one after
    }
    s[total++] = x;
  });
  pass([&s](size_t& i, size_t n, size_t& total) {
    const char x = s[i];
    if (s[i - 1] == ' ' && x == '\'' && i + 1 < n) {
      const char a = s[i + 1];
      if (a == 's' || a == 'm') {
        --total;
      } else if (a != 't' && a != 'd' && i + 2 < n) {
        const char b = s[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e')) --total;
      }
    }
    s[total++] = x;
  });
  return s;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return {};
  return impl_->piece_special[id];
}

const std::string& Tokenizer::render_piece(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return impl_->empty;
  return impl_->piece_plain[id];
}

bool Tokenizer::strips_first_space() const { return impl_->vocab->add_space_prefix; }
bool Tokenizer::cleans_spaces() const { return impl_->vocab->clean_spaces; }
int32_t Tokenizer::n_vocab() const { return impl_->vocab->n_tokens(); }
int32_t Tokenizer::bos_id() const { return impl_->vocab->bos; }
Tokenizer::FimTokens Tokenizer::fim_tokens() const {
  const tok::Vocab& v = *impl_->vocab;
  return {v.fim_pre, v.fim_suf, v.fim_mid, v.fim_pad, v.fim_rep, v.fim_sep};
}
int32_t Tokenizer::eos_id() const { return impl_->vocab->eos; }
bool Tokenizer::is_eog(int32_t id) const { return impl_->vocab->eog.count(id) > 0; }
bool Tokenizer::add_bos() const { return impl_->vocab->add_bos; }
std::optional<std::string> Tokenizer::chat_template() const { return impl_->vocab->chat_template; }

}  // namespace pipellm

#include "engine/tokenizer/streaming_decoder.h"

#include <algorithm>

#include "engine/tokenizer/unicode_text.h"

namespace pipellm {

std::string StreamingDecoder::push(int32_t id) {
  std::string shown;
  if (!shown_.empty() && std::find(shown_.begin(), shown_.end(), id) != shown_.end()) shown = tok_.token_to_piece(id);
  const std::string& piece = shown.empty() ? tok_.render_piece(id) : shown;
  const bool strip = first_ && tok_.strips_first_space() && !piece.empty() && piece[0] == ' ';
  raw_.append(piece, strip ? 1 : 0, std::string::npos);
  first_ = false;

  std::string cleaned;
  const std::string* text = &raw_;
  size_t stable = raw_.size();
  if (tok_.cleans_spaces()) {
    // The clean-up looks at most a few bytes around a space or apostrophe: hold back a tail that
    // starts with one of them, as a later token may still remove or keep it.
    cleaned = tok_.clean_spaces(raw_);
    text = &cleaned;
    stable = cleaned.size();
    for (size_t back = 1; back <= 4 && back <= cleaned.size(); ++back) {
      const char c = cleaned[cleaned.size() - back];
      if (c == ' ' || c == '\'') stable = cleaned.size() - back;
    }
  }
  stable = tok::complete_utf8_prefix(std::string_view(*text).substr(0, stable));
  if (stable <= emitted_) return {};
  std::string out = text->substr(emitted_, stable - emitted_);
  emitted_ = stable;
  return out;
}

std::string StreamingDecoder::flush() {
  const std::string text = tok_.cleans_spaces() ? tok_.clean_spaces(raw_) : raw_;
  std::string out = emitted_ < text.size() ? text.substr(emitted_) : std::string();
  raw_.clear();
  emitted_ = 0;
  first_ = true;
  return out;
}

}  // namespace pipellm

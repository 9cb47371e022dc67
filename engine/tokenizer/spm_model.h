// SentencePiece-style BPE (tokenizer.ggml.model = llama): characters are merged pairwise,
// highest piece score first (leftmost on ties); pieces that never became a token fall back to
// <0xNN> byte tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/vocab.h"

namespace pipellm::tok {

class SpmModel {
 public:
  // chunked=false merges every text as one piece (tests compare both paths).
  explicit SpmModel(const Vocab& vocab, bool chunked = true);

  // Tokenizes `text` (spaces already escaped as U+2581) and appends the ids.
  void encode(const std::string& text, std::vector<int32_t>& out) const;

 private:
  void encode_chunk(std::string_view text, std::vector<int32_t>& out) const;

  const Vocab& vocab_;
  // What some piece holds directly before a U+2581 (see the constructor). A merge can only join
  // the symbol before a U+2581 with it when that symbol is in this set, so the text is cut
  // before every other U+2581 and merged chunk by chunk with the same result (much faster on long
  // texts). Usually only U+2581 itself (runs of spaces); Gemma 3 adds '>' (its piece ">▁</").
  std::set<std::string, std::less<>> joins_space_;
  bool chunked_ = true;
  int32_t byte_token_[256];  // <0xNN> (or the byte itself), -1 when the vocabulary has neither
};

}  // namespace pipellm::tok

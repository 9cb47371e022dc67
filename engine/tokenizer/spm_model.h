// SentencePiece-style BPE (tokenizer.ggml.model = llama): characters are merged pairwise,
// highest piece score first (leftmost on ties); pieces that never became a token fall back to
// <0xNN> byte tokens.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/vocab.h"

namespace pipellm::tok {

class SpmModel {
 public:
  explicit SpmModel(const Vocab& vocab);

  // Tokenizes `text` (spaces already escaped as U+2581) and appends the ids.
  void encode(const std::string& text, std::vector<int32_t>& out) const;

 private:
  void encode_chunk(std::string_view text, std::vector<int32_t>& out) const;

  const Vocab& vocab_;
  // True when no piece holds another character followed by U+2581: then no merge can cross the
  // start of a "▁word", and the text can be merged chunk by chunk with the same result.
  bool chunk_at_spaces_ = true;
  int32_t byte_token_[256];  // <0xNN> (or the byte itself), -1 when the vocabulary has neither
};

}  // namespace pipellm::tok

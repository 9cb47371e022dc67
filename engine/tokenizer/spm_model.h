// SentencePiece-style BPE (tokenizer.ggml.model = llama): characters are merged pairwise,
// highest piece score first (leftmost on ties); pieces that never became a token fall back to
// <0xNN> byte tokens.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tokenizer/vocab.h"

namespace pipellm::tok {

class SpmModel {
 public:
  explicit SpmModel(const Vocab& vocab);

  // Tokenizes `text` (spaces already escaped as U+2581) and appends the ids.
  void encode(const std::string& text, std::vector<int32_t>& out) const;

 private:
  const Vocab& vocab_;
  int32_t byte_token_[256];  // <0xNN> (or the byte itself), -1 when the vocabulary has neither
};

}  // namespace pipellm::tok

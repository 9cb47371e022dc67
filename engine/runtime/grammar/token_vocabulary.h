// What a grammar needs to know about a model's vocabulary: the text each token adds to the
// output, and which ids end generation. Built once per model and shared read-only by every
// sequence's matcher (the trie over the texts is the costly part).
//
// A token's text is what the detokenizer emits for it (Tokenizer::render_piece): byte-fallback
// tokens (<0x41>) are their one byte, SentencePiece's U+2581 is a space. Control and unknown
// tokens emit nothing and so are never allowed; end-of-generation tokens are allowed only where
// the grammar can end, whatever their text.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/runtime/grammar/token_trie.h"

namespace pipellm {
class Tokenizer;
}

namespace pipellm::grammar {

class TokenVocabulary {
 public:
  // texts[id]: the token's output bytes ("" for tokens a grammar never allows); eog: the
  // end-of-generation ids. Throws InvalidArgument for an eog id outside the texts.
  TokenVocabulary(std::vector<std::string> texts, const std::vector<int32_t>& eog);
  static std::shared_ptr<const TokenVocabulary> from_tokenizer(const Tokenizer& t);

  int32_t n_tokens() const { return static_cast<int32_t>(texts_.size()); }
  const std::string& text(int32_t id) const { return texts_[static_cast<size_t>(id)]; }
  bool is_eog(int32_t id) const { return id >= 0 && id < n_tokens() && eog_flag_[static_cast<size_t>(id)] != 0; }
  const std::vector<int32_t>& eog() const { return eog_; }
  const TokenTrie& trie() const { return trie_; }

 private:
  std::vector<std::string> texts_;
  std::vector<int32_t> eog_;
  std::vector<uint8_t> eog_flag_;
  TokenTrie trie_;
};

}  // namespace pipellm::grammar

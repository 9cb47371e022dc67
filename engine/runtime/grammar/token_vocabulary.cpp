#include "engine/runtime/grammar/token_vocabulary.h"

#include "base/error.h"
#include "engine/tokenizer/tokenizer.h"

namespace pipellm::grammar {
namespace {

// The trie leaves end-of-generation ids out: they are never matched as text.
std::vector<std::string> without_eog(std::vector<std::string> texts, const std::vector<int32_t>& eog) {
  for (int32_t id : eog) {
    if (id < 0 || static_cast<size_t>(id) >= texts.size()) {
      throw InvalidArgument("grammar vocabulary: end-of-generation id " + std::to_string(id) + " outside [0, " +
                            std::to_string(texts.size()) + ")");
    }
    texts[static_cast<size_t>(id)].clear();
  }
  return texts;
}

}  // namespace

TokenVocabulary::TokenVocabulary(std::vector<std::string> texts, const std::vector<int32_t>& eog)
    : texts_(std::move(texts)), eog_(eog), eog_flag_(texts_.size(), 0), trie_(without_eog(texts_, eog)) {
  for (int32_t id : eog_) eog_flag_[static_cast<size_t>(id)] = 1;
}

std::shared_ptr<const TokenVocabulary> TokenVocabulary::from_tokenizer(const Tokenizer& t) {
  std::vector<std::string> texts(static_cast<size_t>(t.n_vocab()));
  std::vector<int32_t> eog;
  for (int32_t id = 0; id < t.n_vocab(); ++id) {
    if (t.is_eog(id)) eog.push_back(id);
    texts[static_cast<size_t>(id)] = t.render_piece(id);
  }
  return std::make_shared<const TokenVocabulary>(std::move(texts), eog);
}

}  // namespace pipellm::grammar

// The pre-tokenizer configurations llama.cpp uses per `tokenizer.ggml.pre` value: the split
// regexes (applied one after another) and the vocabulary options that come with the name.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm::tok {

struct PreTokenizerConfig {
  std::vector<std::string> regexes;
  bool ignore_merges = false;  // a word that is already a token skips the merges
  bool clean_spaces = true;    // detokenizer removes " ," " ." " 's" etc.
  bool add_bos = false;        // default for tokenizer.ggml.add_bos_token
  bool has_bos = true;         // false: no BOS token at all (chatglm)
};

// The configuration for `pre`; nullopt for a name llama.cpp does not know. An empty name means
// "default" (old conversions without the key).
std::optional<PreTokenizerConfig> find_pretokenizer_config(const std::string& pre);

}  // namespace pipellm::tok

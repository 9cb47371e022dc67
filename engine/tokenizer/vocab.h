// The vocabulary as llama.cpp sees it after loading: token texts, scores, attributes (from
// tokenizer.ggml.token_type plus llama.cpp's by-name fix-ups), special token ids and the
// tokenizer options. Owns copies of all strings, so it outlives the GgufFile it came from.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/pretokenizer_patterns.h"

namespace pipellm {
class GgufFile;
}

namespace pipellm::tok {

// Token attributes (bit flags, the same meaning as llama.cpp's llama_token_attr).
enum TokenAttr : uint32_t {
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
  kAttrLstrip = 1u << 7,
  kAttrRstrip = 1u << 8,
};

enum class VocabType { kSpm, kBpe };

struct Vocab {
  VocabType type = VocabType::kSpm;
  std::string pre;  // tokenizer.ggml.pre ("" when absent)
  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<uint32_t> attr;
  std::unordered_map<std::string_view, int32_t> ids;  // views into `text`

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1;
  std::set<int32_t> eog;
  bool add_bos = false, add_eos = false, add_space_prefix = false, clean_spaces = false;
  bool ignore_merges = false;
  std::vector<std::string> merges;  // BPE only, in rank order
  std::vector<std::string> pre_regexes;
  std::optional<std::string> chat_template;

  // Tokens matched in raw text before tokenizing (control, user-defined, unknown), longest first.
  std::vector<int32_t> special_tokens;

  int32_t n_tokens() const { return static_cast<int32_t>(text.size()); }
  int32_t find(std::string_view s) const {
    auto it = ids.find(s);
    return it == ids.end() ? -1 : it->second;
  }
};

// Reads tokenizer.ggml.* from `f`. FormatError names the missing/bad key or unknown pre-tokenizer.
std::unique_ptr<Vocab> load_vocab(const GgufFile& f);

}  // namespace pipellm::tok

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

// Text -> id lookup: open addressing over (hash tag, id), texts compared in place. Several times
// faster than std::unordered_map here, which matters as every merge candidate is looked up.
class TokenIndex {
 public:
  // Returns -1, or the earlier id holding the same text when `texts[id]` is a duplicate.
  int32_t insert(const std::vector<std::string>& texts, int32_t id);
  int32_t find(const std::vector<std::string>& texts, std::string_view s) const;
  void reserve(size_t n);

 private:
  struct Slot {
    uint32_t tag = 0;
    int32_t id = -1;
  };
  static uint64_t hash(std::string_view s) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a
    for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ULL;
    return h ^ (h >> 29);
  }
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
};

struct Vocab {
  VocabType type = VocabType::kSpm;
  std::string pre;  // tokenizer.ggml.pre ("" when absent)
  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<uint32_t> attr;
  TokenIndex ids;

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1;
  // Fill-in-the-middle: tokenizer.ggml.fim_*_token_id, else found by their usual texts.
  int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
  std::set<int32_t> eog;
  bool add_bos = false, add_eos = false, add_space_prefix = false, clean_spaces = false;
  bool ignore_merges = false;
  std::vector<std::string> merges;  // BPE only, in rank order
  std::vector<std::string> pre_regexes;
  std::optional<std::string> chat_template;

  // Tokens matched in raw text before tokenizing (control, user-defined, unknown), longest first.
  std::vector<int32_t> special_tokens;

  int32_t n_tokens() const { return static_cast<int32_t>(text.size()); }
  int32_t find(std::string_view s) const { return ids.find(text, s); }
};

// Reads tokenizer.ggml.* from `f`. FormatError names the missing/bad key or unknown pre-tokenizer.
std::unique_ptr<Vocab> load_vocab(const GgufFile& f);

}  // namespace pipellm::tok

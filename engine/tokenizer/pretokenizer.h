// Pre-tokenizer for byte-level BPE: splits text into words the way llama.cpp does. The regexes
// of a configuration run one after another, each over the pieces of the previous one (matches
// and the gaps between them both become pieces). The GPT-2 and Llama 3 patterns use hand-written
// splitters (as llama.cpp does); the others run on PCRE2 over a "collapsed" text where each
// non-ASCII code point is replaced by one byte standing for its Unicode category, which is how
// llama.cpp evaluates \p{..} classes.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pipellm::tok {

struct CompiledRegex;  // PCRE2 code, see pretokenizer.cpp

class PreTokenizer {
 public:
  // Throws FormatError when a regex does not compile (names the regex).
  // use_custom=false runs every pattern on PCRE2 (tests compare both paths).
  explicit PreTokenizer(const std::vector<std::string>& regexes, bool use_custom = true);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits `cpts` (decoded code points) into words; returns each word's length in code points.
  std::vector<size_t> split(const std::vector<uint32_t>& cpts) const;

 private:
  enum class Kind { kGpt2, kLlama3, kQwen2, kCollapsed, kCodepoint };
  struct Step {
    Kind kind;
    std::unique_ptr<CompiledRegex> re;
  };
  std::vector<Step> steps_;
  bool need_collapsed_ = false;
};

}  // namespace pipellm::tok

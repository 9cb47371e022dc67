// Incremental detokenization for generated ids: push() returns only text that is complete UTF-8
// and that later tokens can no longer change, so the concatenation of every push() and the final
// flush() equals Tokenizer::decode() of the whole sequence.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace pipellm {

class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tok) : tok_(tok) {}
  // `shown`: control tokens rendered with their text rather than dropped (a tool-call syntax's
  // markers); then the text is decode() of the sequence with those tokens shown.
  StreamingDecoder(const Tokenizer& tok, std::vector<int32_t> shown) : tok_(tok), shown_(std::move(shown)) {}
  std::string push(int32_t id);
  std::string flush();  // the rest, including an incomplete UTF-8 tail; then starts over

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> shown_;
  std::string raw_;       // pieces joined (before the space clean-up)
  size_t emitted_ = 0;    // bytes of the (cleaned) text already returned
  bool first_ = true;
};

}  // namespace pipellm

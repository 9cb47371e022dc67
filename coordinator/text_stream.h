// Generated ids -> the text a client sees: incremental detokenization (whole UTF-8 characters
// only) with stop strings held back and cut. End-of-generation ids are not rendered.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/runtime/stop_strings.h"
#include "engine/tokenizer/streaming_decoder.h"

namespace pipellm::coord {

// Invalid UTF-8 sequences (a model can emit stray byte tokens) become U+FFFD, so every
// chunk is a valid protobuf/JSON string.
std::string valid_utf8(const std::string& s);

class TextStream {
 public:
  // `shown_ids`: control tokens whose text is shown (StreamingDecoder).
  TextStream(const Tokenizer& tok, std::vector<std::string> stops, std::vector<int32_t> silent_ids,
             std::vector<int32_t> shown_ids = {});

  // The text that became visible with this token ("" while pending).
  std::string push(int32_t id);
  // At the end (no stop string): what was held back.
  std::string flush();
  bool stopped() const { return stops_.stopped(); }
  // Which stop string ended the text (after stopped()).
  std::string matched_stop() const;

 private:
  StreamingDecoder decoder_;
  StopStringFilter stops_;
  std::vector<std::string> stop_list_;
  std::vector<int32_t> silent_;
  std::string seen_;  // decoded text, to tell which stop string matched
};

}  // namespace pipellm::coord

// The head's requests and results in `--prompt` / `--tokens` / `--requests` mode (without a
// coordinator): building Requests (tokenizing text), streaming or collecting the tokens, and the
// --json report the MPI tests read.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/pipeline/scheduler.h"
#include "engine/pipeline/stage_runner.h"
#include "engine/tokenizer/streaming_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "stage_worker/worker_options.h"

namespace pipellm {

// Reads the requests the options name. `tok` may be null when every request gives token ids.
std::vector<Request> build_requests(const WorkerOptions& o, const Tokenizer* tok, const std::vector<int32_t>& stop_ids);

// End-of-generation ids: the tokenizer's when there is one, else tokenizer.ggml.eos/eot ids.
std::vector<int32_t> stop_token_ids(const GgufFile& f, const Tokenizer* tok);

// Collects each request's tokens; streams text to stdout when there is one request and text.
class ResultCollector {
 public:
  ResultCollector(const std::vector<Request>& reqs, const Tokenizer* tok, bool keep_logits, bool stream_text);
  void on_token(const TokenEvent& e);
  // Text of requests that were not streamed (several requests), then a newline.
  void print_text() const;
  void write_json(const std::string& path, const HeadStats& stats, int n_ranks, const std::string& transport) const;

 private:
  struct Result {
    std::vector<int32_t> tokens;  // generated (a stop token is not included)
    std::vector<std::vector<float>> logits;
    std::string text;
    FinishReason finish = FinishReason::None;
    std::unique_ptr<StreamingDecoder> decoder;
  };
  const Tokenizer* tok_;
  bool keep_logits_, stream_;
  std::vector<int64_t> order_;
  std::map<int64_t, Result> results_;
};

}  // namespace pipellm

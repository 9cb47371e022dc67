// The generation routes' shared half (POST /v1/completions, /v1/chat/completions and
// llama-server's /completion): admission onto the one Generation path, and the two ways a
// response is written (one JSON body, or server-sent events). Shutdown, a client that goes away
// and a failure in the stages end every route's requests the same way; what differs per route
// is its wire format, a GenerationFormat.
#pragma once
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "coordinator/front_door.h"
#include "coordinator/generation.h"
#include "coordinator/http_openai.h"

namespace pipellm::coord {

class GenerationFormat {
 public:
  virtual ~GenerationFormat() = default;
  // Streaming: the events before the first update (OpenAI chat: the role chunk).
  virtual std::string stream_open() { return ""; }
  // Every update, in order. Streaming: the events for it ("" for none).
  virtual std::string update(const Generation::Update& u, bool streaming) = 0;
  // The end without failure (`last` went through update() first): the whole body (HttpError
  // when the output is not what the request required), or the stream's last events.
  virtual nlohmann::json body(const Generation::Update& last, const Generation& g) = 0;
  virtual std::string stream_close(const Generation::Update& last, const Generation& g) = 0;
  // A failure after the stream started: its last events.
  virtual std::string stream_error(const ApiError& e) { return sse_event(error_json(e)); }
};

// OpenAI's /v1/completions and /v1/chat/completions. `usage`: stream_options.include_usage;
// `logprobs_tok` is given when the request asked for logprobs; `top_logprobs`: the alternatives
// it asked for per token (Generation::top_logprobs).
std::unique_ptr<GenerationFormat> openai_format(ResponseMeta meta, bool chat, bool usage, const Tokenizer* logprobs_tok,
                                                int top_logprobs = 0);

struct StartedGeneration {
  std::shared_ptr<Generation> gen;  // null: refused with `error`
  ApiError error;
  PreparedRequest prep;
  link::HelloMsg model;
};

// The model must be up, the request pass ModelText::prepare, the caller (`principal`) get a
// stream slot and the scheduler take it.
StartedGeneration start_generation(const FrontDoorContext& ctx, const std::string& principal, const GenerateInput& in);

// Sends `e` in OpenAI's error shape and counts the refusal.
void send_api_error(Metrics& metrics, httplib::Response& res, const ApiError& e);

// Writes `gen`'s response as one JSON body, or as server-sent events. `stopped` says the door is
// shutting down (it outlives the response); `t0` is when the request came (request duration).
void collect_generation(const FrontDoorContext& ctx, const std::atomic<bool>& stopped, httplib::Response& res,
                        Generation& gen, GenerationFormat& format, std::chrono::steady_clock::time_point t0);
void stream_generation(const FrontDoorContext& ctx, const std::atomic<bool>& stopped, httplib::Response& res,
                       std::shared_ptr<Generation> gen, std::unique_ptr<GenerationFormat> format,
                       std::chrono::steady_clock::time_point t0);

}  // namespace pipellm::coord

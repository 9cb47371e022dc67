// The OpenAI wire format of the HTTP front door: request JSON -> GenerateInput (every bad
// field refused by name, 400), response and stream-chunk JSON for /v1/completions and
// /v1/chat/completions, and OpenAI's error shape {"error": {message, type, param, code}}.
// No I/O here, so the shapes are unit-tested field by field.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/request_builder.h"
#include "coordinator/status.h"
#include "coordinator/tool_request.h"
#include "engine/link/messages.h"
#include "engine/tokenizer/tokenizer.h"

namespace pipellm::coord {

// One refusal: HTTP status, OpenAI error type, a short name for it (the `code` field) and
// the parameter it is about (empty: none).
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string code;
  std::string message;
  std::string param;
};

class HttpError : public Error {
 public:
  explicit HttpError(ApiError e) : Error(e.message), err_(std::move(e)) {}
  const ApiError& error() const { return err_; }

 private:
  ApiError err_;
};

ApiError bad_request(const std::string& param, const std::string& message, const std::string& code = "invalid_parameter");
// A refusal from ModelText::prepare (bad parameter, prompt or max_tokens over a limit).
ApiError error_of_prepare(const RequestError& e);
// A refusal from RequestScheduler::submit (queue full: 429; stages down: 503).
ApiError error_of_submit(const RequestError& e);
// A failure after the request started (stages went down, forward pass failed).
ApiError error_of_failure(Code code, const std::string& message);
ApiError error_of_status(int status);  // a bare status from the HTTP layer (404, 413, ...)

nlohmann::json error_json(const ApiError& e);

struct OpenAiRequest {
  GenerateInput input;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::optional<ToolRequest> tools;  // chat: the functions the model may call (input.tools lists them)
};

// Throw HttpError (400) naming the field. `raw` (the body's text, optional) is read again for a
// JSON schema (`json_schema`, `response_format`) so that its properties keep the client's order;
// without it they come out sorted.
OpenAiRequest parse_completion_request(const nlohmann::json& body, const std::string* raw = nullptr);
OpenAiRequest parse_chat_request(const nlohmann::json& body, const std::string* raw = nullptr);
// The body as JSON (an object); throws HttpError 400 "invalid_json".
nlohmann::json parse_body(const std::string& body);

const char* finish_reason_text(link::FinishReason r);  // "stop", "length", "cancelled", "error"

nlohmann::json usage_json(const TokenUsage& u);

// Identity of one response, shared by its chunks.
struct ResponseMeta {
  std::string id;     // "cmpl-7", "chatcmpl-7"
  int64_t created = 0;  // unix seconds
  std::string model;
};

// `logprobs` is choices[0].logprobs: null (not asked), or LogprobTrack::take_completion() /
// take_chat() for the tokens of this response or chunk.
nlohmann::json completion_json(const ResponseMeta& m, const std::string& text, const char* finish, const TokenUsage& u,
                               const nlohmann::json& logprobs = nullptr);
// finish == nullptr: the chunk's finish_reason is null.
nlohmann::json completion_chunk_json(const ResponseMeta& m, const std::string& text, const char* finish,
                                     const nlohmann::json& logprobs = nullptr);
nlohmann::json chat_json(const ResponseMeta& m, const std::string& content, const char* finish, const TokenUsage& u,
                         const nlohmann::json& logprobs = nullptr);
// `role` adds delta.role ("assistant" in the first chunk); `content` nullopt: no delta.content.
nlohmann::json chat_chunk_json(const ResponseMeta& m, const std::optional<std::string>& role,
                               const std::optional<std::string>& content, const char* finish,
                               const nlohmann::json& logprobs = nullptr);

// A log-probability as JSON: null for NaN (not sent).
nlohmann::json logprob_value(float x);
// {"token": piece (valid UTF-8), "logprob", "bytes": the piece's bytes}: one entry of OpenAI's
// chat logprobs and of llama-server's completion_probabilities.
nlohmann::json token_logprob_json(const std::string& piece, float logprob);

// The log-probabilities of one response's tokens, in OpenAI's two shapes. Tokens come in as
// Generation updates give them (ids and logprobs); each token's piece is its own text as the
// detokenizer renders it in place (control tokens "", the first token's leading space dropped
// where decode() drops it). The HTTP door takes the pending tokens with each chunk that returns
// text and with the last one, so a token whose text is held back (an incomplete UTF-8 character,
// a possible stop string) goes with the chunk that returns text after it. text_offset: Unicode
// characters of the text returned so far before the token's text (capped at its length, e.g.
// for the tokens of a stop string).
class LogprobTrack {
 public:
  // `top_logprobs`: alternatives asked per token (0: none; completions' top_logprobs is null then).
  explicit LogprobTrack(const Tokenizer& tok, int top_logprobs = 0) : tok_(tok), top_logprobs_(top_logprobs) {}
  // `top`: each token's alternatives (Generation::Update::top_logprobs), or empty.
  void add_tokens(const std::vector<int32_t>& ids, const std::vector<float>& logprobs,
                  const std::vector<std::vector<TokenLogprob>>& top = {});
  void add_text(const std::string& returned);  // text returned to the client, in order
  bool pending() const { return !pending_.empty(); }
  size_t taken() const { return taken_; }
  // The pending tokens (then none are pending): chat {"content": [{"token", "logprob", "bytes",
  // "top_logprobs": [{"token", "logprob", "bytes"}, ...]}, ...]}; completions {"tokens",
  // "token_logprobs", "top_logprobs": [{text: logprob}, ...] (null without alternatives),
  // "text_offset"}. A logprob the stages did not send (NaN) is null.
  nlohmann::json take_chat();
  nlohmann::json take_completion();

 private:
  struct Token {
    std::string piece;  // raw bytes (may be part of a UTF-8 character)
    float logprob;
    size_t byte_at;     // bytes of the pieces before it
    std::vector<std::pair<std::string, float>> top;  // alternatives: piece, logprob
  };
  size_t char_offset(size_t byte_at);  // monotonic in byte_at

  const Tokenizer& tok_;
  int top_logprobs_ = 0;
  std::vector<Token> pending_;
  size_t raw_bytes_ = 0;
  bool first_ = true;
  std::string text_;  // returned so far
  size_t counted_bytes_ = 0, counted_chars_ = 0;
  size_t taken_ = 0;
};
// The last chunk of a stream with stream_options.include_usage: empty choices and the usage.
nlohmann::json usage_chunk_json(const ResponseMeta& m, bool chat, const TokenUsage& u);

// The OpenAI model object of the served model (GET /v1/models lists it, /v1/models/{id} is it),
// with the head's geometry under `meta`.
nlohmann::json model_json(const link::HelloMsg& m, const std::string& id, int64_t created);
// GET /v1/models/{id} for an id this server does not serve: 404 model_not_found.
ApiError model_not_found(const std::string& asked, const std::string& served);

// JSON text; invalid UTF-8 is replaced, never thrown.
std::string dump_json(const nlohmann::json& j);
// One server-sent event: "data: <json>\n\n".
std::string sse_event(const nlohmann::json& j);
inline const char* sse_done() { return "data: [DONE]\n\n"; }

}  // namespace pipellm::coord

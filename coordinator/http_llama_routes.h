// llama-server's native routes beside the OpenAI ones, as shapes: a POST /completion body read
// into the one GenerateInput (so it runs the same Generation path and sampling type as
// /v1/completions), its response, stream chunks and stop_type, and the bodies of /props,
// /slots and /health. Field names and meanings follow llama.cpp's tools/server/README.md. No
// I/O here, so the shapes are unit-tested field by field.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/http_generation.h"
#include "coordinator/http_openai.h"
#include "coordinator/request_builder.h"
#include "coordinator/request_scheduler.h"

namespace pipellm::coord {

struct LlamaCompletionRequest {
  OpenAiRequest request;       // input and stream
  bool random_seed = false;    // seed -1: the caller draws one
  bool return_tokens = false;  // the response lists the generated ids
  int n_probs = 0;             // completion_probabilities with this many alternatives per token (0: none)
};

// POST /completion's body. `n_predict` (or `max_tokens`): -1 generates to the end of the context,
// N > 0 at most N tokens, absent the server's default; a negative temperature is greedy; text
// prompts are tokenized with special tokens parsed, as llama-server does. llama.cpp-only fields
// that change nothing here (n_keep, samplers, ...) are ignored; cache_prompt (default true, as
// llama-server's) lets the prompt reuse a slot's cached prefix (engine/pipeline/scheduler.h);
// samplers PipeLLM
// does not have (mirostat, DRY, XTC, ...) are refused when set to anything but "off". Throws
// HttpError (400) naming the field. `raw`: see parse_completion_request.
LlamaCompletionRequest parse_llama_completion(const nlohmann::json& body, const std::string* raw = nullptr);

// /completion's refusals name its own field: max_tokens (the shared checks' name) is n_predict.
ApiError as_llama_error(ApiError e);

// llama-server's stop_type: "eos", "limit" (n_predict or the context) or "word" (a stop string).
const char* llama_stop_type(link::FinishReason finish, const std::string& stop_string);

struct LlamaTimings {
  int cache_n = 0;   // prompt tokens the slot's cache held
  int prompt_n = 0;  // prompt tokens evaluated
  double prompt_ms = 0;  // from the request's start to its first token
  int predicted_n = 0;
  double predicted_ms = 0;  // from the first token to the last
};
nlohmann::json llama_timings_json(const LlamaTimings& t);

// The sampling and stopping settings a request runs with, in llama-server's names (`params` of
// /props and /slots).
nlohmann::json llama_params_json(const link::SamplingParams& sp, int n_predict, const std::vector<std::string>& stop,
                                 bool ignore_eos, bool stream);
// /completion's generation_settings: the request as prepared (server defaults applied).
nlohmann::json llama_generation_settings(const GenerateInput& in, const PreparedRequest& prep, int n_ctx, bool stream,
                                         const std::string& model);

struct LlamaCompletion {
  std::string model;
  std::string content;
  std::vector<int32_t> tokens;  // the ids listed in `tokens` (return_tokens, or a stream's last ones)
  std::string stop_type = "eos";
  std::string stopping_word;
  int tokens_evaluated = 0;  // prompt tokens
  int tokens_cached = 0;     // of them, those the slot's cache held (not evaluated again)
  int tokens_predicted = 0;
  LlamaTimings timings;
  nlohmann::json generation_settings = nlohmann::json::object();
  nlohmann::json completion_probabilities = nullptr;  // listed when not null (n_probs > 0)
};
// The final object (stop: true), whole or as a stream's last event.
nlohmann::json llama_completion_json(const LlamaCompletion& c);
// A stream's partial event (stop: false); `probabilities` listed as completion_probabilities
// when not null.
nlohmann::json llama_chunk_json(const std::string& content, const std::vector<int32_t>& tokens,
                                const nlohmann::json& probabilities = nullptr);
// One completion_probabilities entry: {id, token, bytes, logprob, top_logprobs: [{id, token,
// bytes, logprob}, ...]}, the texts being the tokens' pieces.
nlohmann::json llama_token_probs_json(const Tokenizer& tok, int32_t id, float logprob,
                                      const std::vector<TokenLogprob>& top);

// /completion's GenerationFormat: times the first and last tokens from `started`; streams chunks
// and a final object, without OpenAI's [DONE]. `probs_tok` (n_probs > 0): each event lists its
// tokens' completion_probabilities.
std::unique_ptr<GenerationFormat> llama_completion_format(std::string model, nlohmann::json settings, bool return_tokens,
                                                          std::chrono::steady_clock::time_point started,
                                                          const Tokenizer* probs_tok = nullptr);

struct LlamaProps {
  std::string model_id;
  int n_ctx = 0;
  int total_slots = 0;
  nlohmann::json default_params;  // llama_params_json of the server's defaults
  std::optional<std::string> chat_template;
  std::string build_info;
};
nlohmann::json llama_props_json(const LlamaProps& p);
// GET /slots: one object per slot; the scheduler knows how many run, not which slot each holds,
// so the first `processing` slots are the busy ones.
nlohmann::json llama_slots_json(int total_slots, int n_ctx, int processing);

struct HealthReply {
  int status = 200;
  nlohmann::json body;
};
// GET /health: 200 {"status": "ok", ...} while serving; else 503 with llama-server's error object
// ("Loading model" until the head first comes up, the reason after) beside status and reason.
HealthReply health_reply(bool serving, bool has_model, const std::string& down_reason, const SchedulerStats& st);

}  // namespace pipellm::coord

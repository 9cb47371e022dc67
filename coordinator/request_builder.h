// Front-door-neutral generation requests: what a client asked for (text, token ids or chat
// messages; sampling; limits) is checked against the model and turned into the head's
// SubmitRequest. Every refusal names the parameter: InvalidArgument for bad values,
// ResourceExhausted when the prompt and max_tokens do not fit the context or the limits.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/chat_format.h"
#include "engine/link/messages.h"
#include "engine/runtime/sampler.h"
#include "engine/tokenizer/tokenizer.h"

namespace pipellm::coord {

struct GenerateInput {
  enum class PromptKind { None, Text, Tokens, Chat } kind = PromptKind::None;
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<ChatMessage> chat;
  bool add_generation_prompt = true;
  std::optional<bool> add_special;  // BOS etc. (default: on for text, off for token ids)
  // Special-token text (e.g. "<|im_start|>") in the prompt becomes those tokens (default: chat
  // only; llama-server's /completion parses them in text prompts too).
  std::optional<bool> parse_special;

  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
  std::optional<int64_t> top_k, penalty_last_n, max_tokens;
  // Without max_tokens: generate to the end of the context (llama-server's n_predict -1) rather
  // than the server's default; the server's max_tokens limit still applies.
  bool until_context = false;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool logprobs = false;  // report each generated token's log-probability
  int64_t top_logprobs = 0;  // and its most likely alternatives, [0, kMaxTopLogprobs]
  std::string grammar;    // structured output: GBNF the output must match ("" for none), parsed already
  std::optional<bool> cache_prompt;  // llama-server's; default: reuse a slot's cached prefix
  // Chat: the OpenAI `tools` array (JSON) the template is given; special tokens the output text
  // shows (a tool-call syntax's markers, which detokenizing would drop), by their text.
  std::optional<std::string> tools;
  std::vector<std::string> shown_tokens;
};

// A response's token counts; `cached`: of the prompt's, those a slot's cache held (OpenAI's
// usage.prompt_tokens_details.cached_tokens, llama-server's tokens_cached).
struct TokenUsage {
  int prompt = 0, completion = 0, cached = 0;
};

struct RequestLimits {
  int max_prompt_tokens = 0;  // 0: the context length
  int max_tokens = 0;         // 0: no limit beyond the context
  int default_max_tokens = 0;  // without max_tokens: 0 is to the end of the context (llama-server's -1)
  // What a request leaves out: the engine's defaults (llama.cpp's), or the server's sampling
  // flags (--temp, --top-k, -s, ...: llama-server's server-wide defaults). Its grammar is unused
  // (grammars are per request).
  SamplerParams sampling;
  bool random_seed = false;    // -s -1: a random seed for each request without one (else sampling.seed)
  bool ignore_eos = false;     // --ignore-eos: every request
  size_t max_stop_strings = 16;
  size_t max_prompt_bytes = 1 << 20;
};

struct PreparedRequest {
  link::SubmitRequest submit;  // id assigned by the scheduler
  std::vector<std::string> stop_strings;
  std::vector<int32_t> shown_ids;  // special tokens the text shows (GenerateInput::shown_tokens)
};

// The tokenizer side of the coordinator, shared by every front door.
class ModelText {
 public:
  // `chat_template`: the template to render chats with (--chat-template); nullopt: the model's.
  explicit ModelText(std::unique_ptr<Tokenizer> tok, std::optional<std::string> chat_template = std::nullopt);
  const Tokenizer& tokenizer() const { return *tok_; }
  const std::optional<std::string>& chat_template() const { return chat_format_.chat_template; }

  // Throws RequestError. `n_ctx` and `n_vocab` come from the head's Hello.
  PreparedRequest prepare(const GenerateInput& in, int n_ctx, int n_vocab, const RequestLimits& lim) const;
  // Prompt text of a request (text or formatted chat); throws RequestError.
  std::string prompt_text(const GenerateInput& in) const;
  std::vector<int32_t> tokenize(const GenerateInput& in) const;

 private:
  std::unique_ptr<Tokenizer> tok_;
  ChatFormat chat_format_;
  std::vector<int32_t> eog_ids_;
};

}  // namespace pipellm::coord

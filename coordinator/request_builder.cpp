#include "coordinator/request_builder.h"

#include <cmath>

#include "coordinator/status.h"
#include "engine/runtime/sampling_spec.h"
#include "flags/llama_flags.h"

namespace pipellm::coord {

namespace {

[[noreturn]] void invalid(const std::string& what) { throw RequestError(Code::InvalidArgument, what); }

std::string num(double v) {
  std::string s = std::to_string(v);
  while (s.size() > 1 && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

float check_range(const std::optional<float>& v, float def, float lo, float hi, bool lo_open, const char* name) {
  if (!v) return def;
  const float x = *v;
  const bool ok = std::isfinite(x) && (lo_open ? x > lo : x >= lo) && x <= hi;
  if (!ok) {
    invalid(std::string("sampling.") + name + ": must be in " + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) +
            "] (got " + num(x) + ")");
  }
  return x;
}

}  // namespace

ModelText::ModelText(std::unique_ptr<Tokenizer> tok, std::optional<std::string> chat_template)
    : tok_(std::move(tok)),
      chat_format_{chat_template ? chat_template : tok_->chat_template(),
                   tok_->eos_id() >= 0 ? tok_->token_to_piece(tok_->eos_id()) : ""} {
  for (int32_t id = 0; id < tok_->n_vocab(); ++id) {
    if (tok_->is_eog(id)) eog_ids_.push_back(id);
  }
}

std::string ModelText::prompt_text(const GenerateInput& in) const {
  switch (in.kind) {
    case GenerateInput::PromptKind::Text: return in.text;
    case GenerateInput::PromptKind::Chat: return format_chat(in.chat, chat_format_, in.add_generation_prompt, in.tools);
    default: return "";
  }
}

std::vector<int32_t> ModelText::tokenize(const GenerateInput& in) const {
  if (in.kind == GenerateInput::PromptKind::Tokens) return in.tokens;
  const bool chat = in.kind == GenerateInput::PromptKind::Chat;
  // Chat text carries the template's control tokens, so they are parsed as specials.
  return tok_->encode(prompt_text(in), in.add_special.value_or(true), in.parse_special.value_or(chat));
}

PreparedRequest ModelText::prepare(const GenerateInput& in, int n_ctx, int n_vocab, const RequestLimits& lim) const {
  PreparedRequest p;
  link::SubmitRequest& s = p.submit;
  switch (in.kind) {
    case GenerateInput::PromptKind::None: invalid("prompt: missing (give text, tokens or chat messages)");
    case GenerateInput::PromptKind::Text:
      if (in.text.empty()) invalid("prompt.text: empty");
      if (in.text.size() > lim.max_prompt_bytes) {
        throw RequestError(Code::ResourceExhausted, "prompt.text: " + std::to_string(in.text.size()) +
                                                        " bytes, more than the limit of " +
                                                        std::to_string(lim.max_prompt_bytes));
      }
      break;
    case GenerateInput::PromptKind::Tokens:
      if (in.tokens.empty()) invalid("prompt.tokens: empty");
      for (size_t i = 0; i < in.tokens.size(); ++i) {
        if (in.tokens[i] < 0 || in.tokens[i] >= n_vocab) {
          invalid("prompt.tokens[" + std::to_string(i) + "]: unknown token id " + std::to_string(in.tokens[i]) +
                  " (the vocabulary has ids 0.." + std::to_string(n_vocab - 1) + ")");
        }
      }
      break;
    case GenerateInput::PromptKind::Chat: break;  // validated by format_chat
  }

  // Sampling (defaults: the server's, lim.sampling).
  link::SamplingParams& sp = s.sampling;
  const SamplerParams& def = lim.sampling;
  sp.temperature = check_range(in.temperature, def.temperature, 0.0f, 100.0f, false, "temperature");
  sp.top_p = check_range(in.top_p, def.top_p, 0.0f, 1.0f, true, "top_p");
  sp.min_p = check_range(in.min_p, def.min_p, 0.0f, 1.0f, false, "min_p");
  sp.repeat_penalty = check_range(in.repetition_penalty, def.repeat_penalty, 0.0f, 100.0f, true, "repetition_penalty");
  sp.presence_penalty = check_range(in.presence_penalty, def.presence_penalty, -2.0f, 2.0f, false, "presence_penalty");
  sp.frequency_penalty = check_range(in.frequency_penalty, def.frequency_penalty, -2.0f, 2.0f, false, "frequency_penalty");
  if (in.top_k && (*in.top_k < 0 || *in.top_k > n_vocab)) {
    invalid("sampling.top_k: must be in [0, " + std::to_string(n_vocab) + "] (got " + std::to_string(*in.top_k) + ")");
  }
  sp.top_k = in.top_k ? static_cast<int32_t>(*in.top_k) : def.top_k;
  if (in.penalty_last_n && (*in.penalty_last_n < 0 || *in.penalty_last_n > n_ctx)) {
    invalid("sampling.penalty_last_n: must be in [0, " + std::to_string(n_ctx) + "] (got " +
            std::to_string(*in.penalty_last_n) + ")");
  }
  sp.penalty_last_n = in.penalty_last_n ? static_cast<int32_t>(*in.penalty_last_n) : std::min(def.penalty_last_n, n_ctx);
  sp.chain = sampling_spec(def).chain;  // requests do not choose the order
  sp.seed = in.seed ? *in.seed : lim.random_seed ? flags::resolve_seed(std::nullopt) : def.seed;
  sp.logprobs = in.logprobs;
  sp.cache_prompt = in.cache_prompt.value_or(true);
  if (in.top_logprobs < 0 || in.top_logprobs > kMaxTopLogprobs) {
    invalid("sampling.top_logprobs: must be in [0, " + std::to_string(kMaxTopLogprobs) + "] (got " +
            std::to_string(in.top_logprobs) + ")");
  }
  sp.top_logprobs = static_cast<int32_t>(in.top_logprobs);
  sp.grammar = in.grammar;  // the front door compiled and parsed it (schema -> GBNF)

  if (in.max_tokens && *in.max_tokens < 1) {
    invalid("max_tokens: must be at least 1 (got " + std::to_string(*in.max_tokens) + ")");
  }
  if (in.max_tokens && lim.max_tokens > 0 && *in.max_tokens > lim.max_tokens) {
    throw RequestError(Code::ResourceExhausted, "max_tokens: " + std::to_string(*in.max_tokens) +
                                                    " is over the server's limit of " + std::to_string(lim.max_tokens));
  }
  if (in.stop.size() > lim.max_stop_strings) {
    invalid("stop: " + std::to_string(in.stop.size()) + " stop strings, at most " +
            std::to_string(lim.max_stop_strings) + " allowed");
  }
  for (size_t i = 0; i < in.stop.size(); ++i) {
    if (in.stop[i].empty()) invalid("stop[" + std::to_string(i) + "]: empty string");
  }
  p.stop_strings = in.stop;

  s.prompt = tokenize(in);
  if (s.prompt.empty()) invalid("prompt: tokenizes to no tokens");
  const int n_prompt = static_cast<int>(s.prompt.size());
  const int prompt_limit = lim.max_prompt_tokens > 0 ? std::min(lim.max_prompt_tokens, n_ctx - 1) : n_ctx - 1;
  if (n_prompt > prompt_limit) {
    throw RequestError(Code::ResourceExhausted, "prompt: " + std::to_string(n_prompt) +
                                                    " tokens, more than the limit of " + std::to_string(prompt_limit) +
                                                    " (context length " + std::to_string(n_ctx) + ")");
  }
  if (in.max_tokens) {
    if (*in.max_tokens > static_cast<int64_t>(n_ctx) - n_prompt) {  // (not n_prompt + max_tokens: it may overflow)
      throw RequestError(Code::ResourceExhausted,
                         "max_tokens: prompt (" + std::to_string(n_prompt) + " tokens) + max_tokens (" +
                             std::to_string(*in.max_tokens) + ") exceed the context length " + std::to_string(n_ctx));
    }
    s.max_tokens = static_cast<int32_t>(*in.max_tokens);
  } else {
    int m = n_ctx - n_prompt;
    const int cap = in.until_context ? lim.max_tokens : lim.default_max_tokens;
    if (cap > 0) m = std::min(m, cap);
    s.max_tokens = m;
  }
  if (!in.ignore_eos && !lim.ignore_eos) s.stop_ids = eog_ids_;
  return p;
}

}  // namespace pipellm::coord

#include "coordinator/http_tool_calls.h"

#include <algorithm>
#include <random>

#include "base/error.h"
#include "engine/runtime/grammar/gbnf_parser.h"
#include "engine/tokenizer/tool_call_parser.h"

namespace pipellm::coord {

using nlohmann::json;

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_blank(s[b])) ++b;
  while (e > b && is_blank(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// A required call that did not come: the grammar was cut short (max_tokens), or the syntax has
// no grammar and the model answered in text.
ApiError no_call_error(const Generation::Update& last) {
  ApiError e;
  e.status = 500;
  e.type = "server_error";
  e.code = "tool_call_not_produced";
  e.message = std::string("tool_choice asks for a tool call, but the model's output is not a complete one (finish_reason ") +
              finish_reason_text(last.finish) + (last.finish == link::FinishReason::Length ? "; raise max_tokens" : "") + ")";
  return e;
}

class ToolCallFormat final : public GenerationFormat {
 public:
  ToolCallFormat(ResponseMeta meta, bool usage, const Tokenizer* logprobs_tok, ToolCallPlan plan, int top_logprobs)
      : meta_(std::move(meta)), usage_(usage), plan_(std::move(plan)) {
    if (logprobs_tok != nullptr) lp_.emplace(*logprobs_tok, top_logprobs);
  }

  std::string stream_open() override { return sse_event(chat_chunk_json(meta_, std::string("assistant"), std::string(), nullptr)); }

  std::string update(const Generation::Update& u, bool streaming) override {
    if (lp_) lp_->add_tokens(u.tokens, u.logprobs, u.top_logprobs);
    text_ += u.text;
    // A required call is the whole output: nothing to send before it is parsed.
    if (!streaming || plan_.required || u.text.empty()) return "";
    // Content up to where a call may begin, less the blanks before it (a response's content
    // around calls is trimmed).
    size_t upto = std::min(tool_call_start(plan_.syntax, text_), text_.size());
    if (upto < text_.size()) {
      while (upto > sent_ && is_blank(text_[upto - 1])) --upto;
    }
    if (upto <= sent_) return "";
    const std::string delta = text_.substr(sent_, upto - sent_);
    sent_ = upto;
    return content_chunk(delta);
  }

  json body(const Generation::Update& last, const Generation& g) override {
    const ParsedToolCalls p = parse_tool_calls(plan_.syntax, text_, plan_.names);
    if (p.calls.empty() && plan_.required) throw HttpError(no_call_error(last));
    json logprobs = nullptr;
    if (lp_) {
      lp_->add_text(text_);
      logprobs = lp_->take_chat();
    }
    if (p.calls.empty()) {
      return chat_json(meta_, text_, finish_reason_text(last.finish), g.usage(), logprobs);
    }
    json j = chat_json(meta_, p.content, "tool_calls", g.usage(), logprobs);
    json& msg = j["choices"][0]["message"];
    if (p.content.empty()) msg["content"] = nullptr;
    json calls = json::array();
    for (size_t i = 0; i < p.calls.size(); ++i) {
      calls.push_back({{"id", id(i)},
                       {"type", "function"},
                       {"function", {{"name", p.calls[i].name}, {"arguments", p.calls[i].arguments}}}});
    }
    msg["tool_calls"] = calls;
    return j;
  }

  std::string stream_close(const Generation::Update& last, const Generation& g) override {
    const ParsedToolCalls p = parse_tool_calls(plan_.syntax, text_, plan_.names);
    std::string out;
    const char* finish = "tool_calls";
    if (p.calls.empty()) {
      if (plan_.required) return stream_error(no_call_error(last));
      if (sent_ < text_.size()) out += content_chunk(text_.substr(sent_));
      finish = finish_reason_text(last.finish);
    } else {
      // Content the held-back text adds (text after the calls; harmony's final channel).
      const std::string sent = trim(text_.substr(0, sent_));
      if (p.content.size() > sent.size() && p.content.compare(0, sent.size(), sent) == 0) {
        out += content_chunk(p.content.substr(sent.size()));
      }
      for (size_t i = 0; i < p.calls.size(); ++i) {
        const int index = static_cast<int>(i);
        out += tool_delta({{"index", index},
                           {"id", id(i)},
                           {"type", "function"},
                           {"function", {{"name", p.calls[i].name}, {"arguments", ""}}}});
        out += tool_delta({{"index", index}, {"function", {{"arguments", p.calls[i].arguments}}}});
      }
    }
    out += sse_event(chat_chunk_json(meta_, std::nullopt, std::nullopt, finish, take_logprobs()));
    if (usage_) out += sse_event(usage_chunk_json(meta_, true, g.usage()));
    return out + sse_done();
  }

  std::string stream_error(const ApiError& e) override { return sse_event(error_json(e)) + sse_done(); }

 private:
  std::string content_chunk(const std::string& delta) {
    if (lp_) lp_->add_text(delta);
    return sse_event(chat_chunk_json(meta_, std::nullopt, delta, nullptr, take_logprobs()));
  }

  std::string tool_delta(json call) {
    json j = chat_chunk_json(meta_, std::nullopt, std::nullopt, nullptr);
    j["choices"][0]["delta"]["tool_calls"] = json::array({std::move(call)});
    return sse_event(j);
  }

  json take_logprobs() {
    if (!lp_ || !lp_->pending()) return nullptr;
    return lp_->take_chat();
  }

  // The i-th call's id, made once per response.
  const std::string& id(size_t i) {
    while (ids_.size() <= i) ids_.push_back(new_tool_call_id(plan_.syntax));
    return ids_[i];
  }

  ResponseMeta meta_;
  bool usage_;
  ToolCallPlan plan_;
  std::optional<LogprobTrack> lp_;
  std::string text_;   // generated text so far
  size_t sent_ = 0;    // streaming: bytes of text_ sent as content
  std::vector<std::string> ids_;
};

}  // namespace

std::string new_tool_call_id(ToolCallSyntax s) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 rng{(static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, sizeof(kChars) - 2);
  const bool mistral = s == ToolCallSyntax::kMistral;
  std::string id = mistral ? "" : "call_";
  for (int i = 0; i < (mistral ? 9 : 24); ++i) id += kChars[pick(rng)];
  return id;
}

std::optional<ToolCallPlan> plan_tool_calls(const ToolRequest& tools, const std::optional<std::string>& chat_template,
                                            GenerateInput& in) {
  if (tools.choice == ToolRequest::Choice::kNone) return std::nullopt;
  ToolCallPlan plan;
  plan.syntax = chat_template ? detect_tool_call_syntax(*chat_template) : ToolCallSyntax::kNone;
  if (plan.syntax == ToolCallSyntax::kNone) {
    throw HttpError(bad_request("tools",
                                std::string("tools: the model's chat template writes no tool calls (") +
                                    (chat_template ? "none of the known syntaxes: Llama 3.x JSON, Hermes/Qwen <tool_call>, "
                                                     "Mistral [TOOL_CALLS], gpt-oss harmony, DeepSeek, Gemma 4"
                                                   : "the model has no chat template") +
                                    "); use --chat-template with one that does, or tool_choice \"none\"",
                                "unsupported_parameter"));
  }
  std::vector<grammar::ToolSchema> callable;
  for (const auto& f : tools.functions) {
    if (tools.choice != ToolRequest::Choice::kNamed || f.name == tools.named) callable.push_back(f);
  }
  for (const auto& f : callable) plan.names.push_back(f.name);
  plan.required = tools.choice == ToolRequest::Choice::kRequired || tools.choice == ToolRequest::Choice::kNamed;
  // Without a grammar (Gemma 4) a required call is checked when the output is parsed.
  if (plan.required && grammar::tool_call_grammar_supported(plan.syntax)) {
    if (!in.grammar.empty()) {
      throw HttpError(bad_request("tool_choice", "tool_choice: a required tool call cannot be combined with grammar, "
                                                 "json_schema or response_format"));
    }
    if (in.ignore_eos) {
      throw HttpError(bad_request("ignore_eos", "ignore_eos: cannot be combined with a required tool call"));
    }
    const bool parallel = tools.parallel && tools.choice == ToolRequest::Choice::kRequired;
    try {
      in.grammar = grammar::tool_call_gbnf(plan.syntax, callable, parallel);
      grammar::parse_gbnf(in.grammar);
    } catch (const Error& e) {  // a schema the grammar cannot express
      throw HttpError(bad_request("tools", e.what()));
    }
  }
  in.shown_tokens = tool_call_tokens(plan.syntax);
  return plan;
}

std::unique_ptr<GenerationFormat> tool_call_format(ResponseMeta meta, bool usage, const Tokenizer* logprobs_tok,
                                                   ToolCallPlan plan, int top_logprobs) {
  return std::make_unique<ToolCallFormat>(std::move(meta), usage, logprobs_tok, std::move(plan), top_logprobs);
}

}  // namespace pipellm::coord

#include "coordinator/http_openai.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "coordinator/http_tool_request.h"
#include "coordinator/text_stream.h"
#include "engine/runtime/grammar/gbnf_parser.h"
#include "engine/runtime/grammar/json_gbnf_rules.h"
#include "engine/runtime/grammar/json_schema.h"

namespace pipellm::coord {

using nlohmann::json;

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message,
                         const std::string& code = "invalid_parameter") {
  throw HttpError(bad_request(param, message, code));
}

// A count of alternatives per token: [0, kMaxTopLogprobs], with OpenAI's codes for the bounds.
void top_logprobs_range(const char* param, int64_t n) {
  const std::string got = " (got " + std::to_string(n) + ")";
  if (n < 0) refuse(param, std::string(param) + ": must be 0 or more" + got, "integer_below_min_value");
  if (n > kMaxTopLogprobs) {
    refuse(param, std::string(param) + ": must be at most " + std::to_string(kMaxTopLogprobs) + got,
           "integer_above_max_value");
  }
}

const char* type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<float> opt_float(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) refuse(name, std::string(name) + ": must be a number (got " + type_name(*v) + ")");
  const double d = v->get<double>();
  if (!std::isfinite(d)) refuse(name, std::string(name) + ": must be finite");
  return static_cast<float>(d);
}

std::optional<int64_t> opt_int(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      refuse(name, std::string(name) + ": out of range");
    }
    return v->get<int64_t>();
  }
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  refuse(name, std::string(name) + ": must be an integer (got " + type_name(*v) + ")");
}

std::optional<bool> opt_bool(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) refuse(name, std::string(name) + ": must be a boolean (got " + type_name(*v) + ")");
  return v->get<bool>();
}

std::string string_at(const json& v, const std::string& where) {
  if (!v.is_string()) refuse(where.substr(0, where.find_first_of(".[")), where + ": must be a string (got " + type_name(v) + ")");
  return v.get<std::string>();
}

// A schema as the client wrote it: `at` is its path in the body; from `raw` when given (ordered
// keys: json_schema_to_gbnf emits properties in this order), else from the sorted `body`.
nlohmann::ordered_json schema_at(const json& body, const std::string* raw, const std::vector<std::string>& at) {
  if (raw != nullptr) {
    try {
      const nlohmann::ordered_json whole = nlohmann::ordered_json::parse(*raw);
      const nlohmann::ordered_json* v = &whole;
      for (const std::string& k : at) v = &v->at(k);
      return *v;
    } catch (const nlohmann::ordered_json::exception&) {
      // parse_body accepted the body; fall through to the sorted copy rather than fail here
    }
  }
  const json* v = &body;
  for (const std::string& k : at) v = &v->at(k);
  return nlohmann::ordered_json::parse(v->dump());
}

// Compiles a schema to GBNF; a schema it cannot express is a 400 naming `param`.
std::string schema_gbnf(const nlohmann::ordered_json& schema, const char* param, const std::string& where) {
  if (!schema.is_object() && !schema.is_boolean()) {
    const char* got = schema.is_string() ? "a string" : schema.is_number() ? "a number" : schema.is_array() ? "an array" : "null";
    refuse(param, where + ": must be a JSON schema object (got " + std::string(got) + ")");
  }
  try {
    return grammar::json_schema_to_gbnf(schema);
  } catch (const Error& e) {
    refuse(param, where + ": " + e.what());
  }
}

// Structured output (llama-server's `grammar` and `json_schema`, OpenAI's `response_format`):
// the GBNF the sampler is held to, parsed here so that a bad one is this request's 400 rather
// than a failure at the tail. At most one of them.
std::string parse_structured_output(const json& body, const std::string* raw) {
  std::string gbnf;
  const char* from = nullptr;
  const auto take = [&](const char* param, std::string g) {
    if (from != nullptr) {
      refuse(param, std::string(param) + ": give one of grammar, json_schema and response_format (" + from + " is given too)");
    }
    from = param;
    gbnf = std::move(g);
  };
  if (const json* g = field(body, "grammar")) {
    const std::string text = string_at(*g, "grammar");
    if (!text.empty()) take("grammar", text);
  }
  if (field(body, "json_schema") != nullptr) {
    take("json_schema", schema_gbnf(schema_at(body, raw, {"json_schema"}), "json_schema", "json_schema"));
  }
  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object()) {
      refuse("response_format", std::string("response_format: must be an object (got ") + type_name(*rf) + ")");
    }
    const auto type = rf->find("type");
    if (type == rf->end() || !type->is_string()) {
      refuse("response_format", "response_format.type: missing (\"text\", \"json_object\" or \"json_schema\")");
    }
    const std::string t = type->get<std::string>();
    if (t == "json_object") {
      // llama-server also takes a schema here; without one, any JSON value
      if (rf->contains("schema")) {
        take("response_format",
             schema_gbnf(schema_at(body, raw, {"response_format", "schema"}), "response_format", "response_format.schema"));
      } else {
        take("response_format", grammar::any_json_gbnf());
      }
    } else if (t == "json_schema") {
      const auto js = rf->find("json_schema");
      if (js == rf->end() || !js->is_object()) {
        refuse("response_format", "response_format.json_schema: missing (an object with a \"schema\")");
      }
      if (!js->contains("schema")) refuse("response_format", "response_format.json_schema.schema: missing");
      take("response_format", schema_gbnf(schema_at(body, raw, {"response_format", "json_schema", "schema"}), "response_format",
                                          "response_format.json_schema.schema"));
    } else if (t != "text") {
      refuse("response_format", "response_format.type: \"" + t + "\" is not one of \"text\", \"json_object\", \"json_schema\"",
             "unsupported_parameter");
    }
  }
  if (from == nullptr) return "";
  try {
    grammar::parse_gbnf(gbnf);
  } catch (const Error& e) {
    refuse(from, std::string(from) + ": " + e.what());
  }
  return gbnf;
}

// Fields shared by both endpoints: sampling, limits, stop, n, stream.
void parse_common(const json& body, OpenAiRequest& r, const std::string* raw) {
  if (!body.is_object()) refuse("", "body: must be a JSON object");
  GenerateInput& in = r.input;
  in.temperature = opt_float(body, "temperature");
  in.top_p = opt_float(body, "top_p");
  in.min_p = opt_float(body, "min_p");
  in.presence_penalty = opt_float(body, "presence_penalty");
  in.frequency_penalty = opt_float(body, "frequency_penalty");
  in.repetition_penalty = opt_float(body, "repetition_penalty");
  if (!in.repetition_penalty) in.repetition_penalty = opt_float(body, "repeat_penalty");
  in.top_k = opt_int(body, "top_k");
  if (in.top_k && *in.top_k == -1) in.top_k = 0;  // -1 is "off" for vLLM-style clients
  in.cache_prompt = opt_bool(body, "cache_prompt");
  in.penalty_last_n = opt_int(body, "penalty_last_n");
  if (!in.penalty_last_n) in.penalty_last_n = opt_int(body, "repeat_last_n");
  if (const auto seed = opt_int(body, "seed")) {
    if (*seed < 0) refuse("seed", "seed: must be non-negative (got " + std::to_string(*seed) + ")");
    in.seed = static_cast<uint64_t>(*seed);
  }
  in.max_tokens = opt_int(body, "max_tokens");
  if (!in.max_tokens) in.max_tokens = opt_int(body, "max_completion_tokens");
  if (in.max_tokens && *in.max_tokens < 1) {
    refuse("max_tokens", "max_tokens: must be at least 1 (got " + std::to_string(*in.max_tokens) + ")");
  }
  in.ignore_eos = opt_bool(body, "ignore_eos").value_or(false);

  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      in.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) in.stop.push_back(string_at((*stop)[i], "stop[" + std::to_string(i) + "]"));
    } else {
      refuse("stop", std::string("stop: must be a string or an array of strings (got ") + type_name(*stop) + ")");
    }
  }
  if (const auto n = opt_int(body, "n"); n && *n != 1) {
    refuse("n", "n: only n=1 is supported (got " + std::to_string(*n) + ")", "unsupported_parameter");
  }
  if (const auto best_of = opt_int(body, "best_of"); best_of && *best_of != 1) {
    refuse("best_of", "best_of: only 1 is supported", "unsupported_parameter");
  }
  if (const json* lb = field(body, "logit_bias"); lb && !lb->empty()) {
    refuse("logit_bias", "logit_bias: not supported", "unsupported_parameter");
  }
  in.grammar = parse_structured_output(body, raw);
  if (!in.grammar.empty() && in.ignore_eos) {
    // The grammar ends the output with an end-of-generation token, which ignore_eos would skip.
    refuse("ignore_eos", "ignore_eos: cannot be combined with grammar, json_schema or response_format");
  }
  r.stream = opt_bool(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) refuse("stream_options", "stream_options: must be an object");
    r.include_usage = opt_bool(*so, "include_usage").value_or(false);
  }
}

std::vector<int32_t> token_ids(const json& arr, const std::string& where) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < arr.size(); ++i) {
    const json& v = arr[i];
    if (!v.is_number_integer() || v.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
        v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      refuse("prompt", where + "[" + std::to_string(i) + "]: must be a token id (an integer)");
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return ids;
}

std::string message_content(const json& c, const std::string& where) {
  if (c.is_null()) return "";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) refuse("messages", where + ": must be a string or an array of text parts (got " + type_name(c) + ")");
  std::string text;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string part = where + "[" + std::to_string(i) + "]";
    const json& p = c[i];
    if (!p.is_object()) refuse("messages", part + ": must be an object");
    const auto type = p.find("type");
    if (type == p.end() || !type->is_string() || type->get<std::string>() != "text") {
      refuse("messages", part + ".type: only \"text\" parts are supported", "unsupported_parameter");
    }
    const auto t = p.find("text");
    if (t == p.end()) refuse("messages", part + ".text: missing");
    text += string_at(*t, part + ".text");
  }
  return text;
}

// "sampling.top_p: ..." -> "top_p"; "chat.messages[1].role: ..." -> "messages".
std::string param_of(const std::string& message) {
  std::string p = message.substr(0, message.find(':'));
  for (const char* prefix : {"sampling.", "chat."}) {
    if (p.rfind(prefix, 0) == 0) p = p.substr(std::string(prefix).size());
  }
  return p.substr(0, p.find_first_of(".["));
}

}  // namespace

ApiError bad_request(const std::string& param, const std::string& message, const std::string& code) {
  ApiError e;
  e.status = 400;
  e.type = "invalid_request_error";
  e.code = code;
  e.message = message;
  e.param = param;
  return e;
}

ApiError error_of_prepare(const RequestError& err) {
  const std::string msg = err.what();
  ApiError e = bad_request(param_of(msg), msg);
  if (err.code() == Code::ResourceExhausted) {
    if (msg.rfind("prompt.text:", 0) == 0) {
      e.status = 413;
      e.code = "prompt_too_large";
    } else if (msg.find("exceed the context length") != std::string::npos) {
      e.code = "context_length_exceeded";
    } else if (e.param == "max_tokens") {
      e.code = "max_tokens_over_limit";
    } else {
      e.code = "prompt_too_long";
    }
  } else if (err.code() != Code::InvalidArgument) {
    return error_of_failure(err.code(), msg);
  }
  return e;
}

ApiError error_of_submit(const RequestError& err) {
  if (err.code() == Code::ResourceExhausted) {
    ApiError e;
    e.status = 429;
    e.type = "rate_limit_error";
    e.code = "queue_full";
    e.message = err.what();
    return e;
  }
  return error_of_failure(err.code(), err.what());
}

ApiError error_of_failure(Code code, const std::string& message) {
  ApiError e;
  e.message = message;
  switch (code) {
    case Code::InvalidArgument: e = bad_request(param_of(message), message); break;
    case Code::Unavailable:
    case Code::Cancelled:
      e.status = 503;
      e.type = "service_unavailable_error";
      e.code = message.find("shutting down") != std::string::npos || code == Code::Cancelled ? "shutting_down"
                                                                                              : "stages_unavailable";
      break;
    case Code::ResourceExhausted:
      e.status = 429;
      e.type = "rate_limit_error";
      e.code = "queue_full";
      break;
    case Code::DeadlineExceeded:
      e.status = 504;
      e.type = "server_error";
      e.code = "timeout";
      break;
    default:
      e.status = 500;
      e.type = "server_error";
      e.code = "internal_error";
      break;
  }
  return e;
}

ApiError error_of_status(int status) {
  ApiError e;
  e.status = status;
  switch (status) {
    case 404: e.code = "not_found"; e.message = "no such route"; break;
    case 405: e.code = "method_not_allowed"; e.message = "method not allowed on this route"; break;
    case 413: e.code = "body_too_large"; e.message = "request body over the server's limit"; break;
    case 414: e.code = "uri_too_long"; e.message = "request URI too long"; break;
    default:
      if (status >= 500) {
        e.type = "server_error";
        e.code = "internal_error";
        e.message = "internal server error";
      } else {
        e.code = "bad_request";
        e.message = "bad request";
      }
  }
  return e;
}

json error_json(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return json{{"error", err}};
}

json parse_body(const std::string& body) {
  json j;
  // The key path being read, so that a value the parser cannot hold (1e309 overflows a double)
  // is blamed on its own field, not on whichever field a later catch-all names.
  std::vector<std::string> path;
  const json::parser_callback_t track = [&path](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth > 0) {
      path.resize(static_cast<size_t>(depth));
      path.back() = parsed.is_string() ? parsed.get<std::string>() : std::string();
    }
    return true;
  };
  try {
    j = json::parse(body, track);
  } catch (const json::parse_error& e) {
    refuse("", std::string("body: not valid JSON: ") + e.what(), "invalid_json");
  } catch (const json::exception& e) {  // out_of_range.406: a number beyond a double
    std::string field;
    for (const auto& k : path) {
      if (!k.empty()) field += (field.empty() ? "" : ".") + k;
    }
    refuse(field, (field.empty() ? std::string("body") : field) + ": number out of range (" + e.what() + ")");
  }
  if (!j.is_object()) refuse("", std::string("body: must be a JSON object (got ") + type_name(j) + ")", "invalid_json");
  return j;
}

OpenAiRequest parse_completion_request(const json& body, const std::string* raw) {
  OpenAiRequest r;
  parse_common(body, r, raw);
  GenerateInput& in = r.input;
  const json* p = field(body, "prompt");
  if (!p) refuse("prompt", "prompt: missing");
  if (p->is_string()) {
    in.kind = GenerateInput::PromptKind::Text;
    in.text = p->get<std::string>();
  } else if (p->is_array()) {
    if (p->empty()) refuse("prompt", "prompt: empty array");
    if ((*p)[0].is_number()) {
      in.kind = GenerateInput::PromptKind::Tokens;
      in.tokens = token_ids(*p, "prompt");
    } else if (p->size() > 1) {
      refuse("prompt", "prompt: one prompt per request (got " + std::to_string(p->size()) + ")", "unsupported_parameter");
    } else if ((*p)[0].is_string()) {
      in.kind = GenerateInput::PromptKind::Text;
      in.text = (*p)[0].get<std::string>();
    } else if ((*p)[0].is_array()) {
      in.kind = GenerateInput::PromptKind::Tokens;
      in.tokens = token_ids((*p)[0], "prompt[0]");
    } else {
      refuse("prompt", std::string("prompt[0]: must be a string or token ids (got ") + type_name((*p)[0]) + ")");
    }
  } else {
    refuse("prompt", std::string("prompt: must be a string or token ids (got ") + type_name(*p) + ")");
  }
  if (const auto echo = opt_bool(body, "echo"); echo && *echo) refuse("echo", "echo: not supported", "unsupported_parameter");
  // Legacy `logprobs`: how many top alternatives to list besides the chosen token; 0 lists none.
  // OpenAI takes at most 5; up to kMaxTopLogprobs here, as chat's top_logprobs.
  if (const auto lp = opt_int(body, "logprobs")) {
    top_logprobs_range("logprobs", *lp);
    in.logprobs = true;
    in.top_logprobs = *lp;
  }
  if (const json* s = field(body, "suffix"); s && !(s->is_string() && s->get<std::string>().empty())) {
    refuse("suffix", "suffix: not supported", "unsupported_parameter");
  }
  if (const json* tools = field(body, "tools"); tools && !tools->empty()) {  // a chat feature
    refuse("tools", "tools: only on /v1/chat/completions", "unsupported_parameter");
  }
  return r;
}

OpenAiRequest parse_chat_request(const json& body, const std::string* raw) {
  OpenAiRequest r;
  parse_common(body, r, raw);
  GenerateInput& in = r.input;
  in.kind = GenerateInput::PromptKind::Chat;
  const json* msgs = field(body, "messages");
  if (!msgs) refuse("messages", "messages: missing");
  if (!msgs->is_array()) refuse("messages", std::string("messages: must be an array (got ") + type_name(*msgs) + ")");
  for (size_t i = 0; i < msgs->size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const json& m = (*msgs)[i];
    if (!m.is_object()) refuse("messages", where + ": must be an object (got " + type_name(m) + ")");
    const auto role = m.find("role");
    if (role == m.end()) refuse("messages", where + ".role: missing");
    ChatMessage cm;
    cm.role = string_at(*role, where + ".role");
    const auto content = m.find("content");
    cm.content = content == m.end() ? "" : message_content(*content, where + ".content");
    parse_message_tool_fields(m, where, cm);
    in.chat.push_back(std::move(cm));
  }
  r.tools = parse_tool_request(body, raw);
  // tool_choice "none": the model is not told about the tools at all.
  if (r.tools && r.tools->choice != ToolRequest::Choice::kNone) in.tools = r.tools->tools_json;
  in.logprobs = opt_bool(body, "logprobs").value_or(false);
  if (const auto top = opt_int(body, "top_logprobs")) {
    top_logprobs_range("top_logprobs", *top);
    // As OpenAI: the alternatives come with the chosen tokens' logprobs, not instead of them.
    if (*top > 0 && !in.logprobs) refuse("top_logprobs", "top_logprobs: requires logprobs to be true");
    in.top_logprobs = *top;
  }
  return r;
}

const char* finish_reason_text(link::FinishReason r) {
  switch (r) {
    case link::FinishReason::Stop: return "stop";
    case link::FinishReason::Length: return "length";
    case link::FinishReason::Cancelled: return "cancelled";
    case link::FinishReason::Error: return "error";
  }
  return "stop";
}

json usage_json(const TokenUsage& u) {
  return {{"prompt_tokens", u.prompt},
          {"completion_tokens", u.completion},
          {"total_tokens", u.prompt + u.completion},
          {"prompt_tokens_details", {{"cached_tokens", u.cached}}}};
}

namespace {
json finish_value(const char* finish) { return finish ? json(finish) : json(nullptr); }
json envelope(const ResponseMeta& m, const char* object) {
  return {{"id", m.id}, {"object", object}, {"created", m.created}, {"model", m.model}, {"system_fingerprint", "pipellm"}};
}
}  // namespace

json completion_json(const ResponseMeta& m, const std::string& text, const char* finish, const TokenUsage& u,
                     const json& logprobs) {
  json j = envelope(m, "text_completion");
  j["choices"] = json::array({{{"text", text}, {"index", 0}, {"logprobs", logprobs}, {"finish_reason", finish_value(finish)}}});
  j["usage"] = usage_json(u);
  return j;
}

json completion_chunk_json(const ResponseMeta& m, const std::string& text, const char* finish, const json& logprobs) {
  json j = envelope(m, "text_completion");
  j["choices"] = json::array({{{"text", text}, {"index", 0}, {"logprobs", logprobs}, {"finish_reason", finish_value(finish)}}});
  return j;
}

json chat_json(const ResponseMeta& m, const std::string& content, const char* finish, const TokenUsage& u,
               const json& logprobs) {
  json j = envelope(m, "chat.completion");
  j["choices"] = json::array({{{"index", 0},
                               {"message", {{"role", "assistant"}, {"content", content}}},
                               {"logprobs", logprobs},
                               {"finish_reason", finish_value(finish)}}});
  j["usage"] = usage_json(u);
  return j;
}

json chat_chunk_json(const ResponseMeta& m, const std::optional<std::string>& role,
                     const std::optional<std::string>& content, const char* finish, const json& logprobs) {
  json delta = json::object();
  if (role) delta["role"] = *role;
  if (content) delta["content"] = *content;
  json j = envelope(m, "chat.completion.chunk");
  j["choices"] = json::array({{{"index", 0}, {"delta", delta}, {"logprobs", logprobs}, {"finish_reason", finish_value(finish)}}});
  return j;
}

void LogprobTrack::add_tokens(const std::vector<int32_t>& ids, const std::vector<float>& logprobs,
                              const std::vector<std::vector<TokenLogprob>>& top) {
  for (size_t i = 0; i < ids.size(); ++i) {
    // The first position's pieces lose their leading space where decode() drops it, the
    // alternatives too, so that the chosen token reads the same in both lists.
    const bool first = first_;
    const auto piece = [&](int32_t id) {
      const std::string& p = tok_.render_piece(id);
      const bool strip = first && tok_.strips_first_space() && !p.empty() && p[0] == ' ';
      return p.substr(strip ? 1 : 0);
    };
    first_ = false;
    Token t{piece(ids[i]), i < logprobs.size() ? logprobs[i] : std::numeric_limits<float>::quiet_NaN(), raw_bytes_, {}};
    if (i < top.size()) {
      for (const TokenLogprob& a : top[i]) t.top.push_back({piece(a.id), a.logprob});
    }
    raw_bytes_ += t.piece.size();
    pending_.push_back(std::move(t));
  }
}

void LogprobTrack::add_text(const std::string& returned) { text_ += returned; }

size_t LogprobTrack::char_offset(size_t byte_at) {
  const auto continuation = [&](size_t i) { return (static_cast<unsigned char>(text_[i]) & 0xC0) == 0x80; };
  const size_t end = std::min(byte_at, text_.size());
  for (; counted_bytes_ < end; ++counted_bytes_) {
    if (!continuation(counted_bytes_)) ++counted_chars_;
  }
  // A token that starts inside a character (a byte token) is at that character.
  return end < text_.size() && continuation(end) && counted_chars_ > 0 ? counted_chars_ - 1 : counted_chars_;
}

json logprob_value(float x) { return std::isnan(x) ? json(nullptr) : json(x); }

json token_logprob_json(const std::string& piece, float logprob) {
  json bytes = json::array();
  for (char c : piece) bytes.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return {{"token", valid_utf8(piece)}, {"logprob", logprob_value(logprob)}, {"bytes", bytes}};
}

json LogprobTrack::take_chat() {
  json content = json::array();
  for (const Token& t : pending_) {
    json top = json::array();
    for (const auto& [piece, lp] : t.top) top.push_back(token_logprob_json(piece, lp));
    json entry = token_logprob_json(t.piece, t.logprob);
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  taken_ += pending_.size();
  pending_.clear();
  return {{"content", content}};
}

json LogprobTrack::take_completion() {
  json tokens = json::array(), lps = json::array(), offsets = json::array(), tops = json::array();
  for (const Token& t : pending_) {
    tokens.push_back(valid_utf8(t.piece));
    lps.push_back(logprob_value(t.logprob));
    offsets.push_back(char_offset(t.byte_at));
    // {text: logprob} per position; as OpenAI, the chosen token is listed too when it is not
    // among the alternatives (one entry per text: pieces that read the same keep the likelier).
    json top = json::object();
    for (const auto& [piece, lp] : t.top) {
      const std::string key = valid_utf8(piece);
      if (!top.contains(key)) top[key] = logprob_value(lp);
    }
    if (!t.top.empty() && !top.contains(valid_utf8(t.piece))) top[valid_utf8(t.piece)] = logprob_value(t.logprob);
    tops.push_back(std::move(top));
  }
  taken_ += pending_.size();
  pending_.clear();
  return {{"tokens", tokens},
          {"token_logprobs", lps},
          {"top_logprobs", top_logprobs_ > 0 ? tops : json(nullptr)},
          {"text_offset", offsets}};
}

json usage_chunk_json(const ResponseMeta& m, bool chat, const TokenUsage& u) {
  json j = envelope(m, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(u);
  return j;
}

json model_json(const link::HelloMsg& m, const std::string& id, int64_t created) {
  return {{"id", id},
          {"object", "model"},
          {"created", created},
          {"owned_by", "pipellm"},
          {"meta",
           {{"architecture", m.arch},
            {"context_length", m.n_ctx},
            {"n_vocab", m.n_vocab},
            {"n_layer", m.n_layer},
            {"n_stages", m.n_stages},
            {"max_sequences", m.max_sequences}}}};
}

ApiError model_not_found(const std::string& asked, const std::string& served) {
  ApiError e;
  e.status = 404;
  e.code = "model_not_found";
  e.param = "model";
  e.message = "model '" + asked + "' does not exist (this server serves '" + served + "')";
  return e;
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& j) { return "data: " + dump_json(j) + "\n\n"; }

}  // namespace pipellm::coord

#include "engine/tokenizer/tool_call_parser.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>

namespace pipellm {

namespace {

using ojson = nlohmann::ordered_json;
constexpr size_t npos = std::string::npos;
constexpr const char* kWs = " \t\n\r";

// The DeepSeek markers (full-width bars and U+2581 in the token texts).
const std::string kDsCallsBegin = "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>";
const std::string kDsCallsEnd = "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>";
const std::string kDsCallBegin = "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>";
const std::string kDsCallEnd = "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>";
const std::string kDsSep = "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>";

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(kWs);
  if (b == npos) return {};
  return s.substr(b, s.find_last_not_of(kWs) - b + 1);
}

bool starts_with(const std::string& s, const std::string& p, size_t at = 0) { return s.compare(at, p.size(), p) == 0; }

// One past the end of the JSON object or array that starts at `at`, or npos when it does not
// close within `s` (strings and escapes respected; the content is checked by the JSON parser).
size_t json_end(const std::string& s, size_t at) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = at; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') ++depth;
    else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return npos;
}

std::optional<ojson> parse_json(const std::string& s) {
  ojson v = ojson::parse(s, nullptr, false);
  if (v.is_discarded()) return std::nullopt;
  return v;
}

// A call from its name and arguments: a declared name and a JSON object (or a string holding
// one, as some models write it).
std::optional<ToolCall> make_call(const ojson& name, const ojson& args, const std::vector<std::string>& tools) {
  if (!name.is_string()) return std::nullopt;
  const std::string n = name.get<std::string>();
  if (std::find(tools.begin(), tools.end(), n) == tools.end()) return std::nullopt;
  ojson a = args;
  if (a.is_string()) {
    auto p = parse_json(a.get<std::string>());
    if (!p) return std::nullopt;
    a = std::move(*p);
  }
  if (!a.is_object()) return std::nullopt;
  return ToolCall{n, a.dump()};
}

// {"name": ..., "arguments" | "parameters": {...}} (other keys such as "id" or "type" ignored).
std::optional<ToolCall> call_of_object(const ojson& o, const std::vector<std::string>& tools) {
  if (!o.is_object() || !o.contains("name")) return std::nullopt;
  for (const char* key : {"arguments", "parameters"}) {
    if (o.contains(key)) return make_call(o["name"], o[key], tools);
  }
  return std::nullopt;
}

ParsedToolCalls no_calls(const std::string& text) { return {text, {}}; }

ParsedToolCalls with_calls(const std::string& content, std::vector<ToolCall> calls) {
  return {trim(content), std::move(calls)};
}

// <tool_call>{json}</tool_call>, any number; the last closing tag may be missing at the end.
ParsedToolCalls parse_hermes(const std::string& text, const std::vector<std::string>& tools) {
  static const std::string open = "<tool_call>", close = "</tool_call>";
  std::string content;
  std::vector<ToolCall> calls;
  size_t pos = 0;
  for (size_t b; (b = text.find(open, pos)) != npos;) {
    content += text.substr(pos, b - pos);
    const size_t body = b + open.size();
    const size_t e = text.find(close, body);
    const auto obj = parse_json(trim(text.substr(body, e == npos ? npos : e - body)));
    auto call = obj ? call_of_object(*obj, tools) : std::nullopt;
    if (!call) return no_calls(text);
    calls.push_back(std::move(*call));
    pos = e == npos ? text.size() : e + close.size();
  }
  if (calls.empty()) return no_calls(text);
  return with_calls(content + text.substr(pos), std::move(calls));
}

// A sequence of JSON call objects from `at` to the end, separated by whitespace or ';'.
std::optional<std::vector<ToolCall>> object_sequence(const std::string& t, size_t at, const std::vector<std::string>& tools) {
  std::vector<ToolCall> calls;
  for (size_t i = at; i < t.size();) {
    if (t[i] == ';' || t[i] == ' ' || t[i] == '\n' || t[i] == '\t' || t[i] == '\r') {
      ++i;
      continue;
    }
    if (t[i] != '{') return std::nullopt;
    const size_t e = json_end(t, i);
    if (e == npos) return std::nullopt;
    const auto obj = parse_json(t.substr(i, e - i));
    auto call = obj ? call_of_object(*obj, tools) : std::nullopt;
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
    i = e;
  }
  if (calls.empty()) return std::nullopt;
  return calls;
}

// Llama 3.x answers with the call as its whole message: optional <|python_tag|>, then JSON.
ParsedToolCalls parse_llama3(const std::string& text, const std::vector<std::string>& tools) {
  std::string t = trim(text);
  if (starts_with(t, "<|python_tag|>")) t = trim(t.substr(14));
  auto calls = object_sequence(t, 0, tools);
  if (!calls) return no_calls(text);
  return with_calls("", std::move(*calls));
}

// A JSON array of call objects at `at`; its end in *end.
std::optional<std::vector<ToolCall>> call_array(const std::string& t, size_t at, size_t* end,
                                                const std::vector<std::string>& tools) {
  if (at >= t.size() || t[at] != '[') return std::nullopt;
  const size_t e = json_end(t, at);
  if (e == npos) return std::nullopt;
  const auto arr = parse_json(t.substr(at, e - at));
  if (!arr || !arr->is_array() || arr->empty()) return std::nullopt;
  std::vector<ToolCall> calls;
  for (const ojson& o : *arr) {
    auto call = call_of_object(o, tools);
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
  }
  *end = e;
  return calls;
}

// [TOOL_CALLS] [{...}, ...]; without the marker (not shown, or not written) only an answer that
// is nothing but such an array of declared tools.
ParsedToolCalls parse_mistral(const std::string& text, const std::vector<std::string>& tools) {
  static const std::string marker = "[TOOL_CALLS]";
  std::string content;
  std::vector<ToolCall> calls;
  size_t pos = 0;
  for (size_t m; (m = text.find(marker, pos)) != npos;) {
    content += text.substr(pos, m - pos);
    size_t at = text.find_first_not_of(kWs, m + marker.size());
    size_t end = 0;
    auto got = at == npos ? std::nullopt : call_array(text, at, &end, tools);
    if (!got) return no_calls(text);
    for (auto& c : *got) calls.push_back(std::move(c));
    pos = end;
  }
  if (calls.empty()) {
    const std::string t = trim(text);
    size_t end = 0;
    auto got = call_array(t, 0, &end, tools);
    if (!got || end != t.size()) return no_calls(text);
    return with_calls("", std::move(*got));
  }
  return with_calls(content + text.substr(pos), std::move(calls));
}

// Harmony messages: [<|start|>]header<|message|>body[<|end|>|<|call|>|<|return|>]. A header
// with "to=functions.NAME" is a call (body: the arguments); the final channel is the content.
ParsedToolCalls parse_harmony(const std::string& text, const std::vector<std::string>& tools) {
  static const std::string start = "<|start|>", message = "<|message|>", recipient = "to=functions.";
  std::string final_text;
  std::vector<ToolCall> calls;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = text.find(start, pos);
    const std::string seg = text.substr(pos, next == npos ? npos : next - pos);
    pos = next == npos ? text.size() : next + start.size();
    const size_t m = seg.find(message);
    if (m == npos) {
      if (seg.find(recipient) != npos) return no_calls(text);  // a call cut before its arguments
      continue;
    }
    const std::string header = seg.substr(0, m);
    std::string body = seg.substr(m + message.size());
    for (const char* end : {"<|end|>", "<|call|>", "<|return|>"}) body = body.substr(0, body.find(end));
    const size_t r = header.find(recipient);
    if (r != npos) {
      const size_t b = r + recipient.size();
      const size_t e = header.find_first_of(" \t\n<", b);
      const auto args = parse_json(trim(body));
      auto call = args ? make_call(ojson(header.substr(b, e == npos ? npos : e - b)), *args, tools) : std::nullopt;
      if (!call) return no_calls(text);
      calls.push_back(std::move(*call));
    } else if (header.find("<|channel|>final") != npos) {
      final_text += body;
    }
  }
  if (calls.empty()) return no_calls(text);
  return with_calls(final_text, std::move(calls));
}

// DeepSeek: calls between <｜tool▁call▁begin｜> and <｜tool▁call▁end｜> after <｜tool▁calls▁begin｜>.
ParsedToolCalls parse_deepseek(const std::string& text, const std::vector<std::string>& tools, bool r1) {
  size_t first = text.find(kDsCallsBegin);
  if (first == npos) first = text.find(kDsCallBegin);
  if (first == npos) return no_calls(text);
  std::vector<ToolCall> calls;
  size_t pos = first;
  for (size_t b; (b = text.find(kDsCallBegin, pos)) != npos;) {
    const size_t body = b + kDsCallBegin.size();
    const size_t e = text.find(kDsCallEnd, body);
    const std::string call_text = text.substr(body, e == npos ? npos : e - body);
    pos = e == npos ? text.size() : e + kDsCallEnd.size();
    const size_t sep = call_text.find(kDsSep);
    if (sep == npos) return no_calls(text);
    std::string name, args;
    if (r1) {  // function<｜tool▁sep｜>NAME\n```json\nARGS\n```
      const std::string rest = call_text.substr(sep + kDsSep.size());
      const size_t nl = rest.find('\n');
      name = trim(rest.substr(0, nl));
      args = nl == npos ? "" : trim(rest.substr(nl + 1));
      if (starts_with(args, "```json")) args = args.substr(7);
      else if (starts_with(args, "```")) args = args.substr(3);
      if (args.size() >= 3 && args.compare(args.size() - 3, 3, "```") == 0) args.resize(args.size() - 3);
    } else {  // NAME<｜tool▁sep｜>ARGS
      name = trim(call_text.substr(0, sep));
      args = call_text.substr(sep + kDsSep.size());
    }
    const auto a = parse_json(trim(args));
    auto call = a ? make_call(ojson(name), *a, tools) : std::nullopt;
    if (!call) return no_calls(text);
    calls.push_back(std::move(*call));
  }
  if (calls.empty()) return no_calls(text);
  std::string after = text.substr(pos);
  const size_t end = after.find(kDsCallsEnd);
  if (end != npos) after = after.substr(end + kDsCallsEnd.size());
  return with_calls(text.substr(0, first) + after, std::move(calls));
}

// Gemma 4's argument notation -> JSON: strings between <|"|> marks, bare keys at the top level.
class GemmaArgs {
 public:
  explicit GemmaArgs(const std::string& s) : s_(s) {}
  // The value at the start; its end in *end. nullopt when it is not the notation.
  std::optional<ojson> value_at(size_t at, size_t* end) {
    i_ = at;
    auto v = value(0);
    *end = i_;
    return v;
  }

 private:
  static constexpr const char* kQuote = "<|\"|>";
  static constexpr int kMaxDepth = 64;

  std::optional<std::string> quoted() {
    if (!starts_with(s_, kQuote, i_)) return std::nullopt;
    const size_t b = i_ + 5, e = s_.find(kQuote, b);
    if (e == npos) return std::nullopt;
    i_ = e + 5;
    return s_.substr(b, e - b);
  }

  std::optional<ojson> value(int depth) {
    if (depth > kMaxDepth || i_ >= s_.size()) return std::nullopt;
    if (auto q = quoted()) return ojson(*q);
    const char c = s_[i_];
    if (c == '{' || c == '[') {
      const bool obj = c == '{';
      ojson out = obj ? ojson::object() : ojson::array();
      ++i_;
      if (i_ < s_.size() && s_[i_] == (obj ? '}' : ']')) {
        ++i_;
        return out;
      }
      for (;;) {
        if (obj) {
          std::optional<std::string> key = quoted();
          if (!key) {
            const size_t colon = s_.find(':', i_);
            if (colon == npos || colon == i_) return std::nullopt;
            key = s_.substr(i_, colon - i_);
            i_ = colon;
          }
          if (i_ >= s_.size() || s_[i_] != ':') return std::nullopt;
          ++i_;
          auto v = value(depth + 1);
          if (!v) return std::nullopt;
          out[*key] = std::move(*v);
        } else {
          auto v = value(depth + 1);
          if (!v) return std::nullopt;
          out.push_back(std::move(*v));
        }
        if (i_ >= s_.size()) return std::nullopt;
        if (s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (s_[i_] != (obj ? '}' : ']')) return std::nullopt;
        ++i_;
        return out;
      }
    }
    // A bare word: true, false, null/None or a number.
    const size_t e = s_.find_first_of(",}]", i_);
    const std::string word = s_.substr(i_, e == npos ? npos : e - i_);
    i_ = e == npos ? s_.size() : e;
    if (word == "None") return ojson(nullptr);
    auto v = parse_json(word);
    if (!v || v->is_object() || v->is_array() || v->is_string()) return std::nullopt;
    return v;
  }

  const std::string& s_;
  size_t i_ = 0;
};

// <|tool_call>call:NAME{...}<tool_call|>, any number; the closing mark may be missing at the end.
ParsedToolCalls parse_gemma4(const std::string& text, const std::vector<std::string>& tools) {
  static const std::string open = "<|tool_call>call:", close = "<tool_call|>";
  std::string content;
  std::vector<ToolCall> calls;
  size_t pos = 0;
  for (size_t b; (b = text.find(open, pos)) != npos;) {
    content += text.substr(pos, b - pos);
    const size_t name_at = b + open.size();
    const size_t brace = text.find('{', name_at);
    if (brace == npos) return no_calls(text);
    size_t end = 0;
    GemmaArgs g(text);
    const auto args = g.value_at(brace, &end);
    auto call = args ? make_call(ojson(text.substr(name_at, brace - name_at)), *args, tools) : std::nullopt;
    if (!call) return no_calls(text);
    calls.push_back(std::move(*call));
    if (starts_with(text, close, end)) pos = end + close.size();
    else if (text.find_first_not_of(kWs, end) == npos) pos = text.size();  // unclosed at the end
    else return no_calls(text);
  }
  if (calls.empty()) return no_calls(text);
  return with_calls(content + text.substr(pos), std::move(calls));
}

// Where `marker` or a prefix of it (at the very end) first occurs; npos if nowhere.
size_t marker_at(const std::string& text, const std::string& marker) {
  const size_t at = text.find(marker);
  if (at != npos) return at;
  for (size_t len = std::min(marker.size() - 1, text.size()); len > 0; --len) {
    if (text.compare(text.size() - len, len, marker, 0, len) == 0) return text.size() - len;
  }
  return npos;
}

// For syntaxes whose call is the whole answer: hold from the first non-blank character when it
// may begin a call (`openers`, or a prefix of `tag`), hold blank text (it may still become one).
size_t leading_call_start(const std::string& text, const std::string& openers, const std::string& tag) {
  const size_t b = text.find_first_not_of(kWs);
  if (b == npos) return text.empty() ? npos : 0;
  if (openers.find(text[b]) != npos) return 0;
  if (!tag.empty()) {
    const size_t n = std::min(tag.size(), text.size() - b);
    if (text.compare(b, n, tag, 0, n) == 0) return 0;
  }
  return npos;
}

}  // namespace

ParsedToolCalls parse_tool_calls(ToolCallSyntax s, const std::string& text, const std::vector<std::string>& tools) {
  switch (s) {
    case ToolCallSyntax::kLlama3Json: return parse_llama3(text, tools);
    case ToolCallSyntax::kHermes: return parse_hermes(text, tools);
    case ToolCallSyntax::kMistral: return parse_mistral(text, tools);
    case ToolCallSyntax::kHarmony: return parse_harmony(text, tools);
    case ToolCallSyntax::kDeepSeekR1: return parse_deepseek(text, tools, true);
    case ToolCallSyntax::kDeepSeekV3: return parse_deepseek(text, tools, false);
    case ToolCallSyntax::kGemma4: return parse_gemma4(text, tools);
    case ToolCallSyntax::kNone: break;
  }
  return no_calls(text);
}

size_t tool_call_start(ToolCallSyntax s, const std::string& text) {
  switch (s) {
    case ToolCallSyntax::kLlama3Json: return leading_call_start(text, "{", "<|python_tag|>");
    case ToolCallSyntax::kHermes: return marker_at(text, "<tool_call>");
    case ToolCallSyntax::kMistral: {
      const size_t m = marker_at(text, "[TOOL_CALLS]");
      return m != npos ? m : leading_call_start(text, "[", "");
    }
    case ToolCallSyntax::kHarmony: return text.empty() ? npos : 0;  // the answer is all structure
    case ToolCallSyntax::kDeepSeekR1:
    case ToolCallSyntax::kDeepSeekV3:
      return std::min(marker_at(text, kDsCallsBegin), marker_at(text, kDsCallBegin));
    case ToolCallSyntax::kGemma4: return marker_at(text, "<|tool_call>");
    case ToolCallSyntax::kNone: break;
  }
  return npos;
}

}  // namespace pipellm

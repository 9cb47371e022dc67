#include "engine/runtime/grammar/tool_call_gbnf.h"

#include "base/error.h"
#include "engine/runtime/grammar/gbnf_text.h"
#include "engine/runtime/grammar/json_schema.h"

namespace pipellm::grammar {

namespace {

using ojson = nlohmann::ordered_json;

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

// Every rule name in `gbnf` (as json_schema_to_gbnf writes it) with `prefix` in front, so that
// several tools' argument grammars live side by side. Literals, character classes and
// repetition counts are copied as they are.
std::string prefix_rules(const std::string& gbnf, const std::string& prefix) {
  std::string out;
  out.reserve(gbnf.size() * 2);
  size_t i = 0;
  const auto copy_until = [&](char close) {  // from the opener to its unescaped `close`
    out += gbnf[i++];
    while (i < gbnf.size() && gbnf[i] != close) {
      if (gbnf[i] == '\\' && i + 1 < gbnf.size()) out += gbnf[i++];
      out += gbnf[i++];
    }
    if (i < gbnf.size()) out += gbnf[i++];
  };
  while (i < gbnf.size()) {
    const char c = gbnf[i];
    if (c == '"') copy_until('"');
    else if (c == '[') copy_until(']');
    else if (c == '{') copy_until('}');
    else if (is_word_char(c)) {
      out += prefix;
      while (i < gbnf.size() && is_word_char(gbnf[i])) out += gbnf[i++];
    } else {
      out += gbnf[i++];
    }
  }
  return out;
}

// The DeepSeek markers (full-width bars and U+2581 in the token texts).
const char* const kDsCallsBegin = "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>";
const char* const kDsCallsEnd = "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>";
const char* const kDsCallBegin = "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>";
const char* const kDsCallEnd = "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>";
const char* const kDsSep = "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>";

// One call of `name` with arguments `args` (a rule name), as the syntax writes it, spaced as
// the family's template renders past calls.
std::string call_expr(ToolCallSyntax s, const std::string& name, const std::string& args) {
  const std::string json_name = ojson(name).dump();  // the name as a JSON string
  switch (s) {
    case ToolCallSyntax::kLlama3Json:
      return gbnf_literal("{\"name\": " + json_name + ", \"parameters\": ") + " " + args + " \"}\"";
    case ToolCallSyntax::kHermes:
      return gbnf_literal("<tool_call>\n{\"name\": " + json_name + ", \"arguments\": ") + " " + args + " " +
             gbnf_literal("}\n</tool_call>");
    case ToolCallSyntax::kMistral:
      return gbnf_literal("{\"name\": " + json_name + ", \"arguments\": ") + " " + args + " \"}\"";
    case ToolCallSyntax::kHarmony:
      return gbnf_literal("<|channel|>commentary to=functions." + name + " <|constrain|>json<|message|>") + " " + args;
    case ToolCallSyntax::kDeepSeekR1:
      return gbnf_literal(std::string(kDsCallBegin) + "function" + kDsSep + name + "\n```json\n") + " " + args + " " +
             gbnf_literal(std::string("\n```") + kDsCallEnd);
    case ToolCallSyntax::kDeepSeekV3:
      return gbnf_literal(std::string(kDsCallBegin) + name + kDsSep) + " " + args + " " + gbnf_literal(kDsCallEnd);
    case ToolCallSyntax::kGemma4:
    case ToolCallSyntax::kNone: break;
  }
  throw InvalidArgument(std::string("tool calls: no grammar for the ") + tool_call_syntax_name(s) + " syntax");
}

// The whole output from `call` (one call, any tool): one call, or one or more.
std::string root_expr(ToolCallSyntax s, bool parallel) {
  switch (s) {
    case ToolCallSyntax::kHermes: return parallel ? "call (\"\\n\" call)*" : "call";
    case ToolCallSyntax::kMistral: return parallel ? "\"[TOOL_CALLS][\" call (\", \" call)* \"]\"" : "\"[TOOL_CALLS][\" call \"]\"";
    case ToolCallSyntax::kDeepSeekR1:
      return gbnf_literal(kDsCallsBegin) + (parallel ? " call (\"\\n\" call)* " : " call ") + gbnf_literal(kDsCallsEnd);
    case ToolCallSyntax::kDeepSeekV3:
      return gbnf_literal(kDsCallsBegin) + (parallel ? " call+ " : " call ") + gbnf_literal(kDsCallsEnd);
    default: return "call";  // Llama 3 and harmony: one call per message
  }
}

}  // namespace

bool tool_call_grammar_supported(ToolCallSyntax s) {
  return s != ToolCallSyntax::kNone && s != ToolCallSyntax::kGemma4;
}

std::string tool_call_gbnf(ToolCallSyntax s, const std::vector<ToolSchema>& tools, bool parallel) {
  if (!tool_call_grammar_supported(s)) {
    throw InvalidArgument(std::string("tool calls: no grammar for the ") + tool_call_syntax_name(s) + " syntax");
  }
  if (tools.empty()) throw InvalidArgument("tool calls: no tools to call");
  std::string rules, calls;
  for (size_t i = 0; i < tools.size(); ++i) {
    const ToolSchema& t = tools[i];
    const ojson schema = t.parameters.is_null() ? ojson{{"type", "object"}} : t.parameters;
    std::string args;
    try {
      args = json_schema_to_gbnf(schema);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument("tools: the parameters of '" + t.name + "': " + e.what());
    }
    const std::string p = "t" + std::to_string(i) + "-";
    rules += prefix_rules(args, p);
    rules += "call" + std::to_string(i) + " ::= " + call_expr(s, t.name, p + "root") + "\n";
    calls += (i ? " | call" : "call") + std::to_string(i);
  }
  return "root ::= " + root_expr(s, parallel) + "\ncall ::= " + calls + "\n" + rules;
}

}  // namespace pipellm::grammar

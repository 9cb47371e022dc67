#include "engine/tokenizer/tool_call_syntax.h"

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace pipellm {

namespace {

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

}  // namespace

ToolCallSyntax detect_tool_call_syntax(const std::string& t) {
  // Most specific markers first: "<|tool_call>" (Gemma 4) contains "tool_call>".
  if (has(t, "<|tool_call>call:")) return ToolCallSyntax::kGemma4;
  if (has(t, "<tool_call>")) return ToolCallSyntax::kHermes;
  if (has(t, "[TOOL_CALLS]")) return ToolCallSyntax::kMistral;
  if (has(t, "<|channel|>") && has(t, "<|call|>") && has(t, "functions.")) return ToolCallSyntax::kHarmony;
  if (has(t, "tool\xe2\x96\x81" "calls\xe2\x96\x81" "begin")) {  // tool▁calls▁begin
    return has(t, "```json") ? ToolCallSyntax::kDeepSeekR1 : ToolCallSyntax::kDeepSeekV3;
  }
  // Llama 3.1+: the template itself tells the model to answer {"name": ..., "parameters": ...}
  // and writes past calls that way; Llama 3 (8B) has no tools and no such text.
  if (has(t, "<|start_header_id|>") && has(t, "\"parameters\": ") && has(t, "tool_call")) {
    return ToolCallSyntax::kLlama3Json;
  }
  return ToolCallSyntax::kNone;
}

const char* tool_call_syntax_name(ToolCallSyntax s) {
  switch (s) {
    case ToolCallSyntax::kNone: return "none";
    case ToolCallSyntax::kLlama3Json: return "llama3-json";
    case ToolCallSyntax::kHermes: return "hermes";
    case ToolCallSyntax::kMistral: return "mistral";
    case ToolCallSyntax::kHarmony: return "harmony";
    case ToolCallSyntax::kDeepSeekR1: return "deepseek-r1";
    case ToolCallSyntax::kDeepSeekV3: return "deepseek-v3";
    case ToolCallSyntax::kGemma4: return "gemma4";
  }
  return "none";
}

std::vector<std::string> tool_call_tokens(ToolCallSyntax s) {
  switch (s) {
    case ToolCallSyntax::kLlama3Json: return {"<|python_tag|>"};
    case ToolCallSyntax::kHermes: return {"<tool_call>", "</tool_call>"};
    case ToolCallSyntax::kMistral: return {"[TOOL_CALLS]"};
    case ToolCallSyntax::kHarmony: return {"<|start|>", "<|channel|>", "<|constrain|>", "<|message|>", "<|end|>"};
    case ToolCallSyntax::kDeepSeekR1:
    case ToolCallSyntax::kDeepSeekV3:
      return {"<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>",
              "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>",
              "<\xef\xbd\x9ctool\xe2\x96\x81" "sep\xef\xbd\x9c>",
              "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>",
              "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"};
    case ToolCallSyntax::kGemma4: return {"<|tool_call>", "<tool_call|>", "<|\"|>"};
    case ToolCallSyntax::kNone: break;
  }
  return {};
}

std::string template_tool_calls(ToolCallSyntax s, const std::string& openai_tool_calls, const std::string& where) {
  using ojson = nlohmann::ordered_json;
  ojson calls = ojson::parse(openai_tool_calls, nullptr, false);
  if (calls.is_discarded() || !calls.is_array()) throw InvalidArgument(where + ": must be a JSON array of tool calls");
  const bool keep_strings = s == ToolCallSyntax::kDeepSeekR1 || s == ToolCallSyntax::kDeepSeekV3;
  for (ojson& c : calls) {
    if (!c.is_object() || !c.contains("function") || !c["function"].is_object()) continue;
    ojson& args = c["function"]["arguments"];
    if (keep_strings) {
      if (!args.is_string()) args = args.dump();
    } else if (args.is_string()) {
      // A string that is not JSON stays a string: the template renders what it was given.
      ojson parsed = ojson::parse(args.get<std::string>(), nullptr, false);
      if (!parsed.is_discarded()) args = std::move(parsed);
    }
  }
  return calls.dump();
}

}  // namespace pipellm

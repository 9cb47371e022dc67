// The grammar that makes a model call a tool (OpenAI tool_choice "required" or a named function):
// the output is one call, or with `parallel` one or more, written in the template's own syntax
// (engine/tokenizer/tool_call_syntax.h) with each function's arguments held to its parameters'
// JSON schema (json_schema.h). Markers that are special tokens are spelled as text (a grammar
// never allows control tokens); the output shows them as the parser reads them either way.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/tokenizer/tool_call_syntax.h"

namespace pipellm::grammar {

struct ToolSchema {
  std::string name;
  nlohmann::ordered_json parameters;  // a JSON schema; null: any object
};

// Whether tool_call_gbnf can write the syntax (Gemma 4's argument notation is not JSON: no).
bool tool_call_grammar_supported(ToolCallSyntax s);

// InvalidArgument for an unsupported syntax, no tools, or a schema json_schema_to_gbnf cannot
// express ("tools: the parameters of 'NAME': ...").
std::string tool_call_gbnf(ToolCallSyntax s, const std::vector<ToolSchema>& tools, bool parallel);

}  // namespace pipellm::grammar

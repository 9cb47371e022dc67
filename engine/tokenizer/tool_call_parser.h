// Generated text -> the assistant's content and its tool calls, for each ToolCallSyntax
// (tool_call_syntax.h). The text must show the syntax's special tokens (tool_call_tokens()).
// A call counts only when it is complete and well-formed: the name is one of the declared tools
// and the arguments are a JSON object; otherwise nothing is taken out and the whole text stays
// content (a model that started a call and got it wrong, or ran out of tokens, answers in text).
#pragma once
#include <string>
#include <vector>

#include "engine/tokenizer/tool_call_syntax.h"

namespace pipellm {

struct ToolCall {
  std::string name;
  std::string arguments;  // a JSON object as compact JSON text, keys in the model's order
};

struct ParsedToolCalls {
  std::string content;  // the text around the calls (trimmed); the whole text when no calls
  std::vector<ToolCall> calls;
};

// `tools`: the declared function names.
ParsedToolCalls parse_tool_calls(ToolCallSyntax s, const std::string& text, const std::vector<std::string>& tools);

// Streaming: the offset in `text` (generated so far) from which text may belong to a call and is
// to be held back, or npos when all of it is content for certain. A partial marker at the end
// counts (more text may complete it). Once a complete marker is in the text the answer stays.
size_t tool_call_start(ToolCallSyntax s, const std::string& text);

}  // namespace pipellm

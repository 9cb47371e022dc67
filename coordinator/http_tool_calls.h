// Tool calls on /v1/chat/completions, after the request was read (http_tool_request.h): the
// model's template decides the call syntax (engine/tokenizer/tool_call_syntax.h); tool_choice
// "required" or a named function holds the output to a call with a grammar; the generated text is
// parsed back into OpenAI `tool_calls` (finish_reason "tool_calls"). Streaming sends content while
// the text cannot be a call and holds it back from where a call may begin; the calls go out at
// the end, each as two deltas (index, id, type, name; then the arguments).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/http_generation.h"
#include "coordinator/tool_request.h"
#include "engine/tokenizer/tool_call_syntax.h"

namespace pipellm::coord {

struct ToolCallPlan {
  ToolCallSyntax syntax = ToolCallSyntax::kNone;
  std::vector<std::string> names;  // the functions a call may name
  bool required = false;           // tool_choice "required" or named: no call is an error
};

// nullopt for tool_choice "none" (tools not shown to the model, text not parsed). Otherwise sets
// `in`'s grammar (a call is required and the syntax has one) and shown tokens. HttpError 400
// (`tools`, unsupported_parameter) when the chat template has no tool-call syntax, (`tool_choice`)
// when a required call meets another grammar, or a parameters schema the grammar cannot express.
std::optional<ToolCallPlan> plan_tool_calls(const ToolRequest& tools, const std::optional<std::string>& chat_template,
                                            GenerateInput& in);

// The chat response format with tool calls (logprobs_tok as openai_format's).
std::unique_ptr<GenerationFormat> tool_call_format(ResponseMeta meta, bool usage, const Tokenizer* logprobs_tok,
                                                   ToolCallPlan plan, int top_logprobs = 0);

// A new call id: "call_" and 24 letters and digits; Mistral's templates take exactly 9.
std::string new_tool_call_id(ToolCallSyntax s);

}  // namespace pipellm::coord

// A chat request's OpenAI tools, as the HTTP door read them (http_tool_request.h): the functions
// the model may call, and whether it must (tool_choice).
#pragma once
#include <string>
#include <vector>

#include "engine/runtime/grammar/tool_call_gbnf.h"

namespace pipellm::coord {

struct ToolRequest {
  enum class Choice { kNone, kAuto, kRequired, kNamed };
  std::string tools_json;                        // the `tools` array as the client wrote it
  std::vector<grammar::ToolSchema> functions;    // name and parameters of each, in order
  Choice choice = Choice::kAuto;
  std::string named;                             // kNamed: the function to call
  bool parallel = true;                          // parallel_tool_calls
};

}  // namespace pipellm::coord

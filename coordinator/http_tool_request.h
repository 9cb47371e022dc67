// OpenAI tool fields of a /v1/chat/completions body, checked field by field (HttpError 400
// naming `tools`, `tool_choice`, `parallel_tool_calls` or `messages`):
//   tools: [{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}]
//     names of letters, digits, '_' and '-' (at most 64), each once; parameters a JSON schema
//     object (type "object" where given)
//   tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name"}}
//   messages: an assistant's tool_calls [{"id", "type": "function", "function": {"name",
//     "arguments"}}] (arguments a JSON string, or an object), a tool message's tool_call_id, name
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "coordinator/chat_format.h"
#include "coordinator/tool_request.h"

namespace pipellm::coord {

// nullopt when the body names no tools (tool_choice "none" or "auto" alone is fine). `raw` (the
// body's text) keeps the client's key order in the tools the template lists and the schemas.
std::optional<ToolRequest> parse_tool_request(const nlohmann::json& body, const std::string* raw);

// The tool fields of message `m` (at `where`, "messages[i]") into `cm`.
void parse_message_tool_fields(const nlohmann::json& m, const std::string& where, ChatMessage& cm);

}  // namespace pipellm::coord

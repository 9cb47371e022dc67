// Chat messages -> prompt text, for both front doors. Messages are validated here (non-empty
// list, known roles, non-empty content but for tool results and tool-calling turns, a system
// message only first; OpenAI's "developer" role is the system role). A model with a
// tokenizer.chat_template gets its own template rendered (engine/tokenizer/chat_template.h: the
// Jinja engine, the family renderers as fallback), exactly as `pipellm generate --chat` does; a
// model without one gets a plain "role: content" transcript.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm::coord {

struct ChatMessage {
  std::string role;
  std::string content;
  // An assistant message's OpenAI tool_calls (JSON array text, arguments as clients send them:
  // a JSON string); a tool message's call id and function name. (Initialized so that
  // {role, content} stays a complete aggregate initialization.)
  std::optional<std::string> tool_calls = std::nullopt;
  std::optional<std::string> tool_call_id = std::nullopt;
  std::optional<std::string> name = std::nullopt;
};

// How a model's chat prompts are made: its template (if any) and the EOS text it writes
// between turns (BOS comes from tokenizing with add_special).
struct ChatFormat {
  std::optional<std::string> chat_template;
  std::string eos;
};

// Throws RequestError(InvalidArgument) naming the message and field, or the template's refusal.
// `tools`: the OpenAI tools array (JSON) the template is given (templates list them in the
// prompt); tool calls in the messages are handed to the template in the form its tool-call
// syntax renders (engine/tokenizer/tool_call_syntax.h).
std::string format_chat(const std::vector<ChatMessage>& messages, const ChatFormat& format, bool add_generation_prompt,
                        const std::optional<std::string>& tools = std::nullopt);

}  // namespace pipellm::coord

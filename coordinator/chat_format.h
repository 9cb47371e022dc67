// Chat messages -> prompt text, for both front doors. Messages are validated here (non-empty
// list, known roles, non-empty content, a system message only first; OpenAI's "developer" role
// is the system role). A model with a tokenizer.chat_template gets its own template rendered
// (engine/tokenizer/chat_template.h: the Jinja engine, the family renderers as fallback), exactly
// as `pipellm generate --chat` does; a model without one gets a plain "role: content" transcript.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm::coord {

struct ChatMessage {
  std::string role;
  std::string content;
};

// How a model's chat prompts are made: its template (if any) and the EOS text it writes
// between turns (BOS comes from tokenizing with add_special).
struct ChatFormat {
  std::optional<std::string> chat_template;
  std::string eos;
};

// Throws RequestError(InvalidArgument) naming the message and field, or the template's refusal.
std::string format_chat(const std::vector<ChatMessage>& messages, const ChatFormat& format, bool add_generation_prompt);

}  // namespace pipellm::coord

// Chat messages -> prompt text. Messages are validated here (non-empty list, known roles,
// non-empty content). The format follows the model's tokenizer.chat_template family: ChatML
// (<|im_start|>), Llama 3 (<|start_header_id|>), else a plain "role: content" transcript.
// (A full Jinja renderer can replace format_chat() behind the same signature.)
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm::coord {

struct ChatMessage {
  std::string role;
  std::string content;
};

enum class ChatStyle { ChatML, Llama3, Plain };
ChatStyle chat_style(const std::optional<std::string>& chat_template);

// Throws RequestError(InvalidArgument) naming the message and field.
std::string format_chat(const std::vector<ChatMessage>& messages, ChatStyle style, bool add_generation_prompt);

}  // namespace pipellm::coord

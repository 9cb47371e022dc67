#include "coordinator/chat_format.h"

#include "coordinator/status.h"

namespace pipellm::coord {

ChatStyle chat_style(const std::optional<std::string>& t) {
  if (!t) return ChatStyle::Plain;
  if (t->find("<|im_start|>") != std::string::npos) return ChatStyle::ChatML;
  if (t->find("<|start_header_id|>") != std::string::npos) return ChatStyle::Llama3;
  return ChatStyle::Plain;
}

std::string format_chat(const std::vector<ChatMessage>& messages, ChatStyle style, bool add_generation_prompt) {
  if (messages.empty()) throw RequestError(Code::InvalidArgument, "chat.messages: no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "chat.messages[" + std::to_string(i) + "]";
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
      throw RequestError(Code::InvalidArgument, where + ".role: '" + m.role +
                                                    "' is not one of system, user, assistant, tool");
    }
    if (m.content.empty()) throw RequestError(Code::InvalidArgument, where + ".content: empty");
    if (m.role == "system" && i != 0) {
      throw RequestError(Code::InvalidArgument, where + ".role: a system message must come first");
    }
  }
  std::string out;
  for (const auto& m : messages) {
    switch (style) {
      case ChatStyle::ChatML: out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n"; break;
      case ChatStyle::Llama3:
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
        break;
      case ChatStyle::Plain: out += m.role + ": " + m.content + "\n"; break;
    }
  }
  if (add_generation_prompt) {
    switch (style) {
      case ChatStyle::ChatML: out += "<|im_start|>assistant\n"; break;
      case ChatStyle::Llama3: out += "<|start_header_id|>assistant<|end_header_id|>\n\n"; break;
      case ChatStyle::Plain: out += "assistant:"; break;
    }
  }
  return out;
}

}  // namespace pipellm::coord

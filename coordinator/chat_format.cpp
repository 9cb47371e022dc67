#include "coordinator/chat_format.h"

#include "base/error.h"
#include "coordinator/status.h"
#include "engine/tokenizer/chat_template.h"

namespace pipellm::coord {

std::string format_chat(const std::vector<ChatMessage>& messages, const ChatFormat& format, bool add_generation_prompt) {
  if (messages.empty()) throw RequestError(Code::InvalidArgument, "chat.messages: no messages");
  std::vector<pipellm::ChatMessage> msgs;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "chat.messages[" + std::to_string(i) + "]";
    const std::string role = m.role == "developer" ? "system" : m.role;
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      throw RequestError(Code::InvalidArgument, where + ".role: '" + m.role +
                                                    "' is not one of system, developer, user, assistant, tool");
    }
    if (m.content.empty()) throw RequestError(Code::InvalidArgument, where + ".content: empty");
    // Templates place the system prompt at the start (many drop or refuse it elsewhere).
    if (role == "system" && i != 0) {
      throw RequestError(Code::InvalidArgument, where + ".role: a system message must come first");
    }
    msgs.push_back({role, m.content});
  }
  if (format.chat_template) {
    try {
      return apply_chat_template(*format.chat_template, msgs, add_generation_prompt, "", format.eos);
    } catch (const InvalidArgument& e) {
      // The template refused this conversation (raise_exception), or a bad role for it.
      throw RequestError(Code::InvalidArgument, std::string("chat.messages: ") + e.what());
    } catch (const FormatError& e) {
      throw RequestError(Code::Internal, std::string("the model's chat template cannot be rendered: ") + e.what());
    }
  }
  std::string out;
  for (const auto& m : msgs) out += m.role + ": " + m.content + "\n";
  if (add_generation_prompt) out += "assistant:";
  return out;
}

}  // namespace pipellm::coord

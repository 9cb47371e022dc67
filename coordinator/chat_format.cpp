#include "coordinator/chat_format.h"

#include "base/error.h"
#include "coordinator/status.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tool_call_syntax.h"

namespace pipellm::coord {

std::string format_chat(const std::vector<ChatMessage>& messages, const ChatFormat& format, bool add_generation_prompt,
                        const std::optional<std::string>& tools) {
  if (messages.empty()) throw RequestError(Code::InvalidArgument, "chat.messages: no messages");
  const ToolCallSyntax syntax = format.chat_template ? detect_tool_call_syntax(*format.chat_template) : ToolCallSyntax::kNone;
  std::vector<pipellm::ChatMessage> msgs;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "chat.messages[" + std::to_string(i) + "]";
    const std::string role = m.role == "developer" ? "system" : m.role;
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      throw RequestError(Code::InvalidArgument, where + ".role: '" + m.role +
                                                    "' is not one of system, developer, user, assistant, tool");
    }
    // A turn that only calls tools has no text; a tool may return nothing.
    if (m.content.empty() && !m.tool_calls && role != "tool") {
      throw RequestError(Code::InvalidArgument, where + ".content: empty");
    }
    // Templates place the system prompt at the start (many drop or refuse it elsewhere).
    if (role == "system" && i != 0) {
      throw RequestError(Code::InvalidArgument, where + ".role: a system message must come first");
    }
    pipellm::ChatMessage cm{role, m.content};
    if (m.tool_calls) {
      try {
        cm.tool_calls = template_tool_calls(syntax, *m.tool_calls, where + ".tool_calls");
      } catch (const InvalidArgument& e) {
        throw RequestError(Code::InvalidArgument, e.what());
      }
    }
    cm.tool_call_id = m.tool_call_id;
    cm.name = m.name;
    msgs.push_back(std::move(cm));
  }
  if (format.chat_template) {
    ChatTemplateOptions options;
    options.tools = tools;
    try {
      return apply_chat_template(*format.chat_template, msgs, add_generation_prompt, "", format.eos, options);
    } catch (const InvalidArgument& e) {
      // The template refused this conversation (raise_exception), or a bad role for it.
      throw RequestError(Code::InvalidArgument, std::string("chat.messages: ") + e.what());
    } catch (const FormatError& e) {
      throw RequestError(Code::Internal, std::string("the model's chat template cannot be rendered: ") + e.what());
    }
  }
  std::string out;
  for (const auto& m : msgs) {
    out += m.role + ": " + m.content;
    if (m.tool_calls) out += (m.content.empty() ? "" : " ") + *m.tool_calls;
    out += "\n";
  }
  if (add_generation_prompt) out += "assistant:";
  return out;
}

}  // namespace pipellm::coord

// Chat prompts from the model's tokenizer.chat_template. The template (Jinja) is run by the
// engine in engine/tokenizer/jinja as Hugging Face's apply_chat_template runs it. Only when that
// fails (a construct outside the supported subset, a template that does not work on these
// messages) is the template's family recognised by marker strings and rendered by hand-written
// code that follows the family's official template:
//   llama3  <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
//   chatml  <|im_start|>role\ncontent<|im_end|>\n   (Qwen; Qwen 2.5's default system prompt)
//   llama2  [INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] ...
//   mistral [INST] user [/INST]answer</s>[INST] ...   (system text joined to the first user turn)
//   gemma   <start_of_turn>user\ncontent<end_of_turn>\n  (assistant -> "model"; Gemma 2 and 3)
//   phi3    <|role|>\ncontent<|end|>\n
//   gpt-oss <|start|>role<|message|>content<|end|>  (OpenAI harmony: a system message of the
//           model's own, the caller's system text as the developer's instructions, answers on
//           the final channel)
// `bos`/`eos` are written where the family's template writes them; pass bos = "" when the
// tokenizer adds BOS itself (encode with add_special = true).
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm {

struct ChatMessage {
  // The Jinja path takes any role the template knows (system, user, assistant, tool, ...); the
  // hand-written families only system, user and assistant.
  std::string role, content;
  // Optional keys of the template's message dict, absent from it when unset (templates test
  // `message.reasoning_content is defined`). tool_calls is the OpenAI tool_calls array as JSON.
  // (Initialized so that {"user", text} stays a complete aggregate initialization.)
  std::optional<std::string> reasoning_content = std::nullopt;
  std::optional<std::string> tool_calls = std::nullopt;
  std::optional<std::string> tool_call_id = std::nullopt;
  std::optional<std::string> name = std::nullopt;
};

enum class ChatTemplateFamily { kLlama3, kChatml, kLlama2, kMistral, kGemma, kPhi3, kGptOss };

// Values some templates take from outside the messages (Jinja variables and functions).
struct ChatTemplateOptions {
  // The date strftime_now() sees (gpt-oss "Current date: YYYY-MM-DD", Llama 3.2 "Today Date"),
  // YYYY-MM-DD; empty means today in local time.
  std::string date;
  // gpt-oss: "Reasoning: low|medium|high" (the template's reasoning_effort, default medium).
  std::string reasoning_effort = "medium";
  // The OpenAI "tools" array as JSON; unset, the template sees tools = none.
  std::optional<std::string> tools = std::nullopt;
  // A JSON object of further template variables (enable_thinking, builtin_tools, ...).
  std::optional<std::string> variables = std::nullopt;
  // false: skip the Jinja engine, render with the hand-written family renderers only.
  bool use_jinja = true;
};

// FormatError when the template is not one of the families above.
ChatTemplateFamily detect_chat_template(const std::string& tmpl);
const char* chat_template_family_name(ChatTemplateFamily f);

// Renders through the Jinja engine, falling back to the family renderers when the engine fails.
// FormatError when neither can (the message names both failures); InvalidArgument for no
// messages, a bad option (reasoning effort, date, tools/variables JSON), a template that refuses
// the conversation (raise_exception: no fallback, the template means it) or, on the fallback, an
// unknown role.
std::string apply_chat_template(const std::string& tmpl, const std::vector<ChatMessage>& msgs,
                                bool add_generation_prompt, const std::string& bos, const std::string& eos,
                                const ChatTemplateOptions& options = {});

}  // namespace pipellm

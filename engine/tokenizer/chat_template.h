// Chat prompts for the common template families. The GGUF's tokenizer.chat_template (Jinja) is
// not executed: its family is recognised by marker strings and rendered by hand-written code
// that follows the family's official template.
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
#include <string>
#include <vector>

namespace pipellm {

struct ChatMessage {
  std::string role, content;  // role: system, user or assistant
};

enum class ChatTemplateFamily { kLlama3, kChatml, kLlama2, kMistral, kGemma, kPhi3, kGptOss };

// Values some templates take from outside the messages (Jinja variables and functions).
struct ChatTemplateOptions {
  // gpt-oss: "Current date: YYYY-MM-DD" of its system message; empty means today in local time,
  // as the official template's strftime_now("%Y-%m-%d").
  std::string date;
  // gpt-oss: "Reasoning: low|medium|high" (the template's reasoning_effort, default medium).
  std::string reasoning_effort = "medium";
};

// FormatError when the template is not one of the families above.
ChatTemplateFamily detect_chat_template(const std::string& tmpl);
const char* chat_template_family_name(ChatTemplateFamily f);

// FormatError for an unrecognised template, InvalidArgument for an unknown role, no messages or
// a bad option (reasoning effort, date).
std::string apply_chat_template(const std::string& tmpl, const std::vector<ChatMessage>& msgs,
                                bool add_generation_prompt, const std::string& bos, const std::string& eos,
                                const ChatTemplateOptions& options = {});

}  // namespace pipellm

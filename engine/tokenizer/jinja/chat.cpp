#include "engine/tokenizer/jinja/chat.h"

namespace pipellm::jinja {

std::string render_chat_template(const std::string& tmpl, const Value& messages, bool add_generation_prompt,
                                 const std::string& bos_token, const std::string& eos_token,
                                 const std::vector<std::pair<std::string, Value>>& extra,
                                 const RenderOptions& options) {
  // HF passes tools=None and documents=None when the caller gives none: templates test
  // `tools is not none` as often as `tools is defined`.
  std::vector<std::pair<std::string, Value>> vars = {
      {"messages", messages},
      {"tools", Value::none()},
      {"documents", Value::none()},
      {"add_generation_prompt", Value::boolean(add_generation_prompt)},
      {"bos_token", Value::string(bos_token)},
      {"eos_token", Value::string(eos_token)},
  };
  vars.insert(vars.end(), extra.begin(), extra.end());  // later entries replace earlier ones
  return Template(tmpl).render(vars, options);
}

}  // namespace pipellm::jinja

// Renders a model's tokenizer.chat_template the way Hugging Face's apply_chat_template does:
// the template sees `messages` (a list of dicts: role, content and any of tool_calls,
// tool_call_id, name, reasoning_content), `tools` and `documents` (none unless given),
// `add_generation_prompt`, `bos_token`, `eos_token`, and any extra variables (enable_thinking,
// reasoning_effort, date_string, ...), which may also replace the ones above.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/jinja/template.h"
#include "engine/tokenizer/jinja/value.h"

namespace pipellm::jinja {

// FormatError for a template that does not parse or fails while rendering (line and column in
// the message), InvalidArgument when the template refuses the conversation (raise_exception).
std::string render_chat_template(const std::string& tmpl, const Value& messages, bool add_generation_prompt,
                                 const std::string& bos_token, const std::string& eos_token,
                                 const std::vector<std::pair<std::string, Value>>& extra = {},
                                 const RenderOptions& options = {});

}  // namespace pipellm::jinja

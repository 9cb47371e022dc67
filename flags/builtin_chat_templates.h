// Chat templates selectable by name (--chat-template chatml, as llama.cpp's built-in list), as
// short Jinja texts of the families engine/tokenizer/chat_template.h renders: the same renderer
// runs them as it runs a model's own template.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm::flags {

std::vector<std::string> builtin_chat_template_names();
// The Jinja text of a built-in template, nullopt for an unknown name.
std::optional<std::string> builtin_chat_template(const std::string& name);

}  // namespace pipellm::flags

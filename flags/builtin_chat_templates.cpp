#include "flags/builtin_chat_templates.h"

namespace pipellm::flags {

namespace {

struct Builtin {
  const char* name;
  const char* jinja;
};

// Each renders a conversation as the family renderer of engine/tokenizer/chat_template.cpp does
// (tests/unit/llama_flags_test.cpp checks that). Systemless families fold system text into the
// next user turn.
const Builtin kBuiltins[] = {
    {"chatml",
     "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"},
    {"llama3",
     "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n"
     "{{ message.content | trim }}<|eot_id|>{% endfor %}"
     "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"},
    {"phi3",
     "{% for message in messages %}<|{{ message.role }}|>\n{{ message.content }}<|end|>\n{% endfor %}"
     "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"},
    {"gemma",
     "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
     "{% if message.role == 'system' %}{% set ns.system = ns.system + message.content + '\\n\\n' %}"
     "{% else %}<start_of_turn>{{ 'user' if message.role == 'user' else 'model' }}\n"
     "{% if message.role == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
     "{{ message.content | trim }}<end_of_turn>\n{% endif %}{% endfor %}"
     "{% if ns.system %}<start_of_turn>user\n{{ ns.system | trim }}<end_of_turn>\n{% endif %}"
     "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"},
    {"mistral",
     "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
     "{% if message.role == 'system' %}{% set ns.system = ns.system + ('\\n\\n' if ns.system else '') + message.content %}"
     "{% elif message.role == 'user' %}[INST] {{ ns.system + '\\n\\n' + message.content if ns.system else message.content }}"
     " [/INST]{% set ns.system = '' %}{% else %}{{ message.content }}{{ eos_token }}{% endif %}{% endfor %}"
     "{% if ns.system %}[INST] {{ ns.system }} [/INST]{% endif %}"},
    {"llama2",
     "{% set ns = namespace(system='') %}{% for message in messages %}"
     "{% if message.role == 'system' %}{% set ns.system = message.content %}"
     "{% elif message.role == 'user' %}{{ bos_token }}[INST] "
     "{% if ns.system %}<<SYS>>\n{{ ns.system | trim }}\n<</SYS>>\n\n{% endif %}{{ message.content | trim }} [/INST]"
     "{% set ns.system = '' %}{% else %} {{ message.content | trim }} {{ eos_token }}{% endif %}{% endfor %}"},
};

}  // namespace

std::vector<std::string> builtin_chat_template_names() {
  std::vector<std::string> out;
  for (const Builtin& b : kBuiltins) out.emplace_back(b.name);
  return out;
}

std::optional<std::string> builtin_chat_template(const std::string& name) {
  for (const Builtin& b : kBuiltins) {
    if (name == b.name) return std::string(b.jinja);
  }
  return std::nullopt;
}

}  // namespace pipellm::flags

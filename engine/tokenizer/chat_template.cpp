#include "engine/tokenizer/chat_template.h"

#include "engine/util/error.h"

namespace pipellm {

namespace {

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

void check_messages(const std::vector<ChatMessage>& msgs) {
  if (msgs.empty()) throw InvalidArgument("chat template: no messages");
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string& r = msgs[i].role;
    if (r != "system" && r != "user" && r != "assistant") {
      throw InvalidArgument("chat template: message " + std::to_string(i) + " has unknown role '" + r +
                            "' (expected system, user or assistant)");
    }
  }
}

// Families without a system slot: the system text goes in front of the first user message.
std::vector<ChatMessage> fold_system(const std::vector<ChatMessage>& msgs, const char* sep) {
  std::vector<ChatMessage> out;
  std::string system;
  for (const auto& m : msgs) {
    if (m.role == "system") {
      system += (system.empty() ? "" : sep) + m.content;
    } else if (m.role == "user" && !system.empty()) {
      out.push_back({m.role, system + sep + m.content});
      system.clear();
    } else {
      out.push_back(m);
    }
  }
  if (!system.empty()) out.push_back({"user", system});
  return out;
}

std::string render_llama3(const std::vector<ChatMessage>& msgs, bool gen, const std::string& bos) {
  std::string s = bos;
  for (const auto& m : msgs) s += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
  if (gen) s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return s;
}

std::string render_chatml(const std::string& tmpl, const std::vector<ChatMessage>& msgs, bool gen) {
  static constexpr const char* kQwen25System = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
  std::string s;
  if (has(tmpl, kQwen25System) && msgs.front().role != "system") {
    s += std::string("<|im_start|>system\n") + kQwen25System + "<|im_end|>\n";
  }
  for (const auto& m : msgs) s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (gen) s += "<|im_start|>assistant\n";
  return s;
}

std::string render_llama2(const std::vector<ChatMessage>& msgs, const std::string& bos, const std::string& eos) {
  std::string s, system;
  for (const auto& m : msgs) {
    if (m.role == "system") {
      system = m.content;
    } else if (m.role == "user") {
      std::string content = trim(m.content);
      if (!system.empty()) content = "<<SYS>>\n" + trim(system) + "\n<</SYS>>\n\n" + content;
      system.clear();
      s += bos + "[INST] " + content + " [/INST]";
    } else {
      s += " " + trim(m.content) + " " + eos;
    }
  }
  return s;
}

std::string render_mistral(const std::vector<ChatMessage>& msgs, const std::string& bos, const std::string& eos) {
  std::string s = bos;
  for (const auto& m : fold_system(msgs, "\n\n")) {
    if (m.role == "user") s += "[INST] " + m.content + " [/INST]";
    else s += m.content + eos;
  }
  return s;
}

std::string render_gemma(const std::vector<ChatMessage>& msgs, bool gen, const std::string& bos) {
  std::string s = bos;
  for (const auto& m : fold_system(msgs, "\n\n")) {
    const std::string role = m.role == "assistant" ? "model" : m.role;
    s += "<start_of_turn>" + role + "\n" + trim(m.content) + "<end_of_turn>\n";
  }
  if (gen) s += "<start_of_turn>model\n";
  return s;
}

std::string render_phi3(const std::vector<ChatMessage>& msgs, bool gen) {
  std::string s;
  for (const auto& m : msgs) s += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
  if (gen) s += "<|assistant|>\n";
  return s;
}

}  // namespace

ChatTemplateFamily detect_chat_template(const std::string& t) {
  if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) return ChatTemplateFamily::kLlama3;
  if (has(t, "<|im_start|>")) return ChatTemplateFamily::kChatml;
  if (has(t, "<start_of_turn>")) return ChatTemplateFamily::kGemma;
  if (has(t, "<|assistant|>") && has(t, "<|end|>")) return ChatTemplateFamily::kPhi3;
  if (has(t, "[INST]")) return has(t, "<<SYS>>") ? ChatTemplateFamily::kLlama2 : ChatTemplateFamily::kMistral;
  std::string head = t.substr(0, 80);
  throw FormatError("chat template: unrecognised template (not llama3, chatml, llama2, mistral, gemma or phi3): \"" +
                    head + (t.size() > 80 ? "...\"" : "\""));
}

const char* chat_template_family_name(ChatTemplateFamily f) {
  switch (f) {
    case ChatTemplateFamily::kLlama3: return "llama3";
    case ChatTemplateFamily::kChatml: return "chatml";
    case ChatTemplateFamily::kLlama2: return "llama2";
    case ChatTemplateFamily::kMistral: return "mistral";
    case ChatTemplateFamily::kGemma: return "gemma";
    case ChatTemplateFamily::kPhi3: return "phi3";
  }
  return "?";
}

std::string apply_chat_template(const std::string& tmpl, const std::vector<ChatMessage>& msgs,
                                bool add_generation_prompt, const std::string& bos, const std::string& eos) {
  const ChatTemplateFamily family = detect_chat_template(tmpl);
  check_messages(msgs);
  switch (family) {
    case ChatTemplateFamily::kLlama3: return render_llama3(msgs, add_generation_prompt, bos);
    case ChatTemplateFamily::kChatml: return render_chatml(tmpl, msgs, add_generation_prompt);
    case ChatTemplateFamily::kLlama2: return render_llama2(msgs, bos, eos);
    case ChatTemplateFamily::kMistral: return render_mistral(msgs, bos, eos);
    case ChatTemplateFamily::kGemma: return render_gemma(msgs, add_generation_prompt, bos);
    case ChatTemplateFamily::kPhi3: return render_phi3(msgs, add_generation_prompt);
  }
  return {};
}

}  // namespace pipellm

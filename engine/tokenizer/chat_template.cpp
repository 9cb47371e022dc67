#include "engine/tokenizer/chat_template.h"

#include <ctime>
#include <utility>

#include "base/error.h"
#include "engine/tokenizer/jinja/chat.h"
#include "engine/tokenizer/jinja/json.h"

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

// Gemma has no system turn: as its template does, the system text and a blank line go in front of
// the next user turn untrimmed, while each message's own content is trimmed.
std::string render_gemma(const std::vector<ChatMessage>& msgs, bool gen, const std::string& bos) {
  std::string s = bos, system;
  for (const auto& m : msgs) {
    if (m.role == "system") {
      system += m.content + "\n\n";
      continue;
    }
    const bool user = m.role == "user";
    s += std::string("<start_of_turn>") + (user ? "user" : "model") + "\n";
    if (user) s += system, system.clear();
    s += trim(m.content) + "<end_of_turn>\n";
  }
  // Only system text (the official template would render nothing): keep it as a user turn.
  if (!system.empty()) s += "<start_of_turn>user\n" + trim(system) + "<end_of_turn>\n";
  if (gen) s += "<start_of_turn>model\n";
  return s;
}

std::string render_phi3(const std::vector<ChatMessage>& msgs, bool gen) {
  std::string s;
  for (const auto& m : msgs) s += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
  if (gen) s += "<|assistant|>\n";
  return s;
}

// "YYYY-MM-DD" of today in local time (strftime_now("%Y-%m-%d") in the Jinja templates).
std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &local);
  return buf;
}

bool is_date(const std::string& d) {
  if (d.size() != 10 || d[4] != '-' || d[7] != '-') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (d[i] < '0' || d[i] > '9') return false;
  }
  return true;
}

void check_options(const ChatTemplateOptions& o) {
  const std::string& effort = o.reasoning_effort;
  if (effort != "low" && effort != "medium" && effort != "high") {
    throw InvalidArgument("chat template: reasoning effort '" + effort + "' (expected low, medium or high)");
  }
  if (!o.date.empty() && !is_date(o.date)) {
    throw InvalidArgument("chat template: date '" + o.date + "' is not YYYY-MM-DD");
  }
}

// The messages as the template sees them: a list of dicts with role and content first (in that
// order, as callers of HF's apply_chat_template write them), then the optional keys that are set.
jinja::Value messages_value(const std::vector<ChatMessage>& msgs) {
  std::vector<jinja::Value> list;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    jinja::Value d = jinja::Value::dict();
    d.set("role", jinja::Value::string(m.role));
    d.set("content", jinja::Value::string(m.content));
    if (m.reasoning_content) d.set("reasoning_content", jinja::Value::string(*m.reasoning_content));
    if (m.tool_calls) {
      d.set("tool_calls", jinja::parse_json(*m.tool_calls, "chat template: tool_calls of message " + std::to_string(i)));
    }
    if (m.tool_call_id) d.set("tool_call_id", jinja::Value::string(*m.tool_call_id));
    if (m.name) d.set("name", jinja::Value::string(*m.name));
    list.push_back(std::move(d));
  }
  return jinja::Value::list(std::move(list));
}

// Midnight of a YYYY-MM-DD date (already checked by is_date) as strftime_now's clock.
std::tm date_tm(const std::string& date) {
  std::tm t{};
  t.tm_year = std::stoi(date.substr(0, 4)) - 1900;
  t.tm_mon = std::stoi(date.substr(5, 2)) - 1;
  t.tm_mday = std::stoi(date.substr(8, 2));
  if (t.tm_mon < 0 || t.tm_mon > 11 || t.tm_mday < 1 || t.tm_mday > 31) {
    throw InvalidArgument("chat template: date '" + date + "' is not a calendar date");
  }
  const std::time_t secs = timegm(&t);  // also fills tm_wday and tm_yday (%a, %j)
  std::tm out{};
  gmtime_r(&secs, &out);
  return out;
}

std::string render_jinja(const std::string& tmpl, const std::vector<ChatMessage>& msgs, bool gen,
                         const std::string& bos, const std::string& eos, const ChatTemplateOptions& o) {
  std::vector<std::pair<std::string, jinja::Value>> extra;
  if (o.tools) extra.emplace_back("tools", jinja::parse_json(*o.tools, "chat template: tools"));
  // Only a non-default effort is passed, as HF callers pass kwargs: the gpt-oss template's own
  // default is medium.
  if (o.reasoning_effort != "medium") extra.emplace_back("reasoning_effort", jinja::Value::string(o.reasoning_effort));
  if (o.variables) {
    const jinja::Value vars = jinja::parse_json(*o.variables, "chat template: variables");
    if (!vars.is_dict()) throw InvalidArgument("chat template: variables must be a JSON object");
    for (const auto& [k, v] : vars.entries()) extra.emplace_back(k, v);
  }
  jinja::RenderOptions ro;
  if (!o.date.empty()) ro.now = date_tm(o.date);
  return jinja::render_chat_template(tmpl, messages_value(msgs), gen, bos, eos, extra, ro);
}

// gpt-oss (OpenAI harmony) as its published template renders a conversation without tools or
// reasoning text: the model's own system message, then every system message's text as the
// developer's instructions, then the turns. Earlier answers are final-channel messages closed by
// <|end|>; a closing answer without a generation prompt ends in <|return|>, as in training.
std::string render_gpt_oss(const std::vector<ChatMessage>& msgs, bool gen, const ChatTemplateOptions& o) {
  const std::string& effort = o.reasoning_effort;
  if (effort != "low" && effort != "medium" && effort != "high") {
    throw InvalidArgument("chat template: gpt-oss reasoning effort '" + effort + "' (expected low, medium or high)");
  }
  if (!o.date.empty() && !is_date(o.date)) {
    throw InvalidArgument("chat template: date '" + o.date + "' is not YYYY-MM-DD");
  }
  std::string s =
      "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
      "Knowledge cutoff: 2024-06\nCurrent date: " +
      (o.date.empty() ? today() : o.date) + "\n\nReasoning: " + effort +
      "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>";
  // The template takes only a leading system message; later ones join it rather than vanish.
  std::string developer;
  for (const auto& m : msgs) {
    if (m.role == "system" && !m.content.empty()) developer += (developer.empty() ? "" : "\n\n") + m.content;
  }
  if (!developer.empty()) s += "<|start|>developer<|message|># Instructions\n\n" + developer + "\n\n<|end|>";
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == "user") {
      s += "<|start|>user<|message|>" + m.content + "<|end|>";
    } else if (m.role == "assistant") {
      const bool closing = i + 1 == msgs.size() && !gen;
      s += "<|start|>assistant<|channel|>final<|message|>" + m.content + (closing ? "<|return|>" : "<|end|>");
    }
  }
  if (gen) s += "<|start|>assistant";
  return s;
}

}  // namespace

ChatTemplateFamily detect_chat_template(const std::string& t) {
  if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) return ChatTemplateFamily::kLlama3;
  if (has(t, "<|im_start|>")) return ChatTemplateFamily::kChatml;
  if (has(t, "<start_of_turn>")) return ChatTemplateFamily::kGemma;
  if (has(t, "<|assistant|>") && has(t, "<|end|>")) return ChatTemplateFamily::kPhi3;
  if (has(t, "[INST]")) return has(t, "<<SYS>>") ? ChatTemplateFamily::kLlama2 : ChatTemplateFamily::kMistral;
  if (has(t, "<|start|>") && has(t, "<|channel|>")) return ChatTemplateFamily::kGptOss;
  std::string head = t.substr(0, 80);
  throw FormatError(
      "chat template: unrecognised template (not llama3, chatml, llama2, mistral, gemma, phi3 or gpt-oss): \"" +
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
    case ChatTemplateFamily::kGptOss: return "gpt-oss";
  }
  return "?";
}

std::string apply_chat_template(const std::string& tmpl, const std::vector<ChatMessage>& msgs,
                                bool add_generation_prompt, const std::string& bos, const std::string& eos,
                                const ChatTemplateOptions& options) {
  if (msgs.empty()) throw InvalidArgument("chat template: no messages");
  check_options(options);
  std::string jinja_error;
  if (options.use_jinja) {
    try {
      return render_jinja(tmpl, msgs, add_generation_prompt, bos, eos, options);
    } catch (const FormatError& e) {
      jinja_error = e.what();  // the family renderers may still know this template
    }
  }
  ChatTemplateFamily family;
  try {
    family = detect_chat_template(tmpl);
  } catch (const FormatError& e) {
    if (!options.use_jinja) throw;
    throw FormatError(std::string(e.what()) + "; the Jinja engine failed too: " + jinja_error);
  }
  check_messages(msgs);
  switch (family) {
    case ChatTemplateFamily::kLlama3: return render_llama3(msgs, add_generation_prompt, bos);
    case ChatTemplateFamily::kChatml: return render_chatml(tmpl, msgs, add_generation_prompt);
    case ChatTemplateFamily::kLlama2: return render_llama2(msgs, bos, eos);
    case ChatTemplateFamily::kMistral: return render_mistral(msgs, bos, eos);
    case ChatTemplateFamily::kGemma: return render_gemma(msgs, add_generation_prompt, bos);
    case ChatTemplateFamily::kPhi3: return render_phi3(msgs, add_generation_prompt);
    case ChatTemplateFamily::kGptOss: return render_gpt_oss(msgs, add_generation_prompt, options);
  }
  return {};
}

}  // namespace pipellm

#include "coordinator/http_tool_request.h"

#include <algorithm>

#include "coordinator/http_openai.h"

namespace pipellm::coord {

namespace {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

[[noreturn]] void refuse(const std::string& param, const std::string& message) {
  throw HttpError(bad_request(param, message));
}

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// The member `key` of object `o` when present and not null.
template <class J>
const J* member(const J& o, const char* key) {
  const auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

// One entry of `tools`, at `where` ("tools[i]").
grammar::ToolSchema tool_at(const ojson& t, const std::string& where) {
  if (!t.is_object()) refuse("tools", where + ": must be an object");
  const ojson* type = member(t, "type");
  if (type == nullptr || !type->is_string() || type->get<std::string>() != "function") {
    refuse("tools", where + ".type: must be \"function\"");
  }
  const ojson* f = member(t, "function");
  if (f == nullptr || !f->is_object()) refuse("tools", where + ".function: missing (an object with a \"name\")");
  const ojson* name = member(*f, "name");
  if (name == nullptr || !name->is_string()) refuse("tools", where + ".function.name: missing (a string)");
  grammar::ToolSchema s;
  s.name = name->get<std::string>();
  if (!valid_name(s.name)) {
    refuse("tools", where + ".function.name: '" + s.name + "' must be 1 to 64 letters, digits, '_' or '-'");
  }
  if (const ojson* d = member(*f, "description"); d && !d->is_string()) {
    refuse("tools", where + ".function.description: must be a string");
  }
  if (const ojson* st = member(*f, "strict"); st && !st->is_boolean()) {
    refuse("tools", where + ".function.strict: must be a boolean");
  }
  if (const ojson* p = member(*f, "parameters")) {
    if (!p->is_object()) refuse("tools", where + ".function.parameters: must be a JSON schema object");
    if (const ojson* pt = member(*p, "type"); pt && *pt != "object") {
      refuse("tools", where + ".function.parameters.type: must be \"object\" (arguments are a JSON object)");
    }
    s.parameters = *p;
  }
  return s;
}

void parse_choice(const json& body, ToolRequest* r, bool have_tools) {
  const json* c = member(body, "tool_choice");
  if (c == nullptr) return;
  if (c->is_string()) {
    const std::string v = c->get<std::string>();
    if (v == "none") r->choice = ToolRequest::Choice::kNone;
    else if (v == "auto") r->choice = ToolRequest::Choice::kAuto;
    else if (v == "required") r->choice = ToolRequest::Choice::kRequired;
    else refuse("tool_choice", "tool_choice: \"" + v + "\" is not one of \"none\", \"auto\", \"required\" or a function");
  } else if (c->is_object()) {
    const json* type = member(*c, "type");
    const json* f = member(*c, "function");
    const json* name = f && f->is_object() ? member(*f, "name") : nullptr;
    if (type == nullptr || *type != "function" || name == nullptr || !name->is_string()) {
      refuse("tool_choice", "tool_choice: an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    r->choice = ToolRequest::Choice::kNamed;
    r->named = name->get<std::string>();
    const auto& fs = r->functions;
    if (have_tools && std::none_of(fs.begin(), fs.end(), [&](const auto& t) { return t.name == r->named; })) {
      refuse("tool_choice", "tool_choice.function.name: '" + r->named + "' is not one of the tools");
    }
  } else {
    refuse("tool_choice", "tool_choice: must be a string or an object");
  }
  if (!have_tools && (r->choice == ToolRequest::Choice::kRequired || r->choice == ToolRequest::Choice::kNamed)) {
    refuse("tool_choice", "tool_choice: a call is asked for but no tools are given");
  }
}

}  // namespace

std::optional<ToolRequest> parse_tool_request(const json& body, const std::string* raw) {
  ToolRequest r;
  const json* tools = member(body, "tools");
  if (tools != nullptr && !tools->is_array()) refuse("tools", "tools: must be an array of functions");
  const bool have_tools = tools != nullptr && !tools->empty();
  if (have_tools) {
    // The client's key order, so the template lists the schemas as written.
    ojson ordered;
    if (raw != nullptr) {
      const ojson whole = ojson::parse(*raw, nullptr, false);
      if (whole.is_object() && whole.contains("tools")) ordered = whole["tools"];
    }
    if (!ordered.is_array()) ordered = ojson::parse(tools->dump());
    for (size_t i = 0; i < ordered.size(); ++i) {
      grammar::ToolSchema s = tool_at(ordered[i], "tools[" + std::to_string(i) + "]");
      for (const auto& t : r.functions) {
        if (t.name == s.name) refuse("tools", "tools[" + std::to_string(i) + "].function.name: '" + s.name + "' is given twice");
      }
      r.functions.push_back(std::move(s));
    }
    r.tools_json = ordered.dump();
  }
  parse_choice(body, &r, have_tools);
  if (const json* p = member(body, "parallel_tool_calls")) {
    if (!p->is_boolean()) refuse("parallel_tool_calls", "parallel_tool_calls: must be a boolean");
    r.parallel = p->get<bool>();
  }
  if (!have_tools) return std::nullopt;
  return r;
}

void parse_message_tool_fields(const json& m, const std::string& where, ChatMessage& cm) {
  if (const json* calls = member(m, "tool_calls")) {
    if (cm.role != "assistant") refuse("messages", where + ".tool_calls: only assistant messages call tools");
    if (!calls->is_array()) refuse("messages", where + ".tool_calls: must be an array");
    for (size_t i = 0; i < calls->size(); ++i) {
      const std::string at = where + ".tool_calls[" + std::to_string(i) + "]";
      const json& c = (*calls)[i];
      if (!c.is_object()) refuse("messages", at + ": must be an object");
      if (const json* id = member(c, "id"); id && !id->is_string()) refuse("messages", at + ".id: must be a string");
      if (const json* type = member(c, "type"); type && *type != "function") {
        refuse("messages", at + ".type: must be \"function\"");
      }
      const json* f = member(c, "function");
      if (f == nullptr || !f->is_object()) refuse("messages", at + ".function: missing");
      const json* name = member(*f, "name");
      if (name == nullptr || !name->is_string()) refuse("messages", at + ".function.name: missing (a string)");
      const json* args = member(*f, "arguments");
      if (args != nullptr && !args->is_string() && !args->is_object()) {
        refuse("messages", at + ".function.arguments: must be a JSON string (or an object)");
      }
    }
    if (!calls->empty()) cm.tool_calls = calls->dump();
  }
  if (const json* id = member(m, "tool_call_id")) {
    if (!id->is_string()) refuse("messages", where + ".tool_call_id: must be a string");
    cm.tool_call_id = id->get<std::string>();
  }
  if (const json* name = member(m, "name")) {
    if (!name->is_string()) refuse("messages", where + ".name: must be a string");
    cm.name = name->get<std::string>();
  }
}

}  // namespace pipellm::coord

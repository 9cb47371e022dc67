#include "engine/tokenizer/jinja/json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/tokenizer/jinja/error.h"
#include "engine/tokenizer/jinja/pystr.h"

namespace pipellm::jinja {

namespace {

// json.dumps' string encoder: ", \, the C0 controls (short forms where JSON has them); with
// ensure_ascii every non-ASCII code point as \uXXXX (surrogate pairs above U+FFFF).
void write_string(std::string& out, const std::string& s, bool ensure_ascii) {
  char buf[16];
  out += '"';
  for (size_t i = 0; i < s.size();) {
    size_t n;
    const uint32_t cp = pystr::decode_at(s, i, &n);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || (ensure_ascii && cp >= 0x80 && cp < 0x10000)) {
          std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
          out += buf;
        } else if (ensure_ascii && cp >= 0x10000) {
          const uint32_t v = cp - 0x10000;
          std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          out += buf;
        } else {
          out.append(s, i, n);
        }
    }
    i += n;
  }
  out += '"';
}

void newline(std::string& out, const JsonOptions& o, int level) {
  out += '\n';
  for (int i = 0; i < level; ++i) out += o.indent_text.empty() ? std::string(static_cast<size_t>(o.indent), ' ') : o.indent_text;
}

void write(std::string& out, const Value& v, const JsonOptions& o, int level) {
  const bool indenting = o.indent >= 0 || !o.indent_text.empty();
  switch (v.kind()) {
    case Value::Kind::kNone: out += "null"; return;
    case Value::Kind::kBool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::kInt: out += std::to_string(v.as_int()); return;
    case Value::Kind::kFloat: {
      const double d = v.as_float();
      if (std::isnan(d)) out += "NaN";
      else if (std::isinf(d)) out += d > 0 ? "Infinity" : "-Infinity";
      else out += pystr::float_repr(d);
      return;
    }
    case Value::Kind::kString: write_string(out, v.as_string(), o.ensure_ascii); return;
    case Value::Kind::kList: {
      if (v.is_generator()) throw OpError("Object of type generator is not JSON serializable");
      const auto& items = v.items();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += o.item_separator;
        if (indenting) newline(out, o, level + 1);
        write(out, items[i], o, level + 1);
      }
      if (indenting) newline(out, o, level);
      out += ']';
      return;
    }
    case Value::Kind::kDict: {
      if (v.is_namespace()) throw OpError("Object of type Namespace is not JSON serializable");
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : v.entries()) entries.push_back(&e);
      if (o.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(), [](auto* a, auto* b) { return a->first < b->first; });
      }
      if (entries.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += o.item_separator;
        if (indenting) newline(out, o, level + 1);
        write_string(out, entries[i]->first, o.ensure_ascii);
        out += o.key_separator;
        write(out, entries[i]->second, o, level + 1);
      }
      if (indenting) newline(out, o, level);
      out += '}';
      return;
    }
    case Value::Kind::kUndefined: throw OpError("Object of type Undefined is not JSON serializable (" + v.undefined_why() + ")");
    case Value::Kind::kFunction: throw OpError("Object of type function is not JSON serializable");
  }
  throw OpError("tojson: unknown value kind");
}

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::number(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::number(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value d = Value::dict();
      for (auto it = j.begin(); it != j.end(); ++it) d.set(it.key(), from_json(it.value()));
      return d;
    }
    default: break;
  }
  throw InvalidArgument("JSON value of an unsupported type (binary or discarded)");
}

}  // namespace

std::string to_json(const Value& v, const JsonOptions& options) {
  std::string out;
  write(out, v, options, 0);
  return out;
}

Value parse_json(const std::string& text, const std::string& what) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(what + " is not valid JSON: " + e.what());
  }
  return from_json(j);
}

}  // namespace pipellm::jinja

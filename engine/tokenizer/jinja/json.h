// JSON in and out of template values. Out: the `tojson` filter as Hugging Face defines it for chat
// templates (json.dumps with ensure_ascii=False by default, Python's separators, no HTML escaping
// unlike Jinja's own tojson). In: messages and tools given as JSON text keep their key order.
#pragma once
#include <string>

#include "engine/tokenizer/jinja/value.h"

namespace pipellm::jinja {

struct JsonOptions {
  bool ensure_ascii = false;  // \uXXXX for every non-ASCII code point
  int indent = -1;            // < 0: one line
  std::string indent_text;    // when set (indent given as a string), used per level instead of spaces
  // json.dumps' separators: (", ", ": ") on one line, (",", ": ") when indenting.
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};

// OpError for what json.dumps rejects (undefined, namespace, functions).
std::string to_json(const Value& v, const JsonOptions& options);

// JSON text (messages, tools, extra variables from a caller) as a Value, objects keeping their key
// order; InvalidArgument naming `what` when the text is not JSON: the caller's input is wrong.
Value parse_json(const std::string& text, const std::string& what);

}  // namespace pipellm::jinja

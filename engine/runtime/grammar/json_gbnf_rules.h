// The building blocks of JSON grammars, with llama.cpp's json-schema-to-grammar definitions (so
// a schema constrains output the same way, but for two fixes that keep every output parseable:
// exponents of at most two digits, no \u escapes of surrogates): whitespace, strings, numbers,
// literals, any value, string formats. Every length is bounded except string contents and container sizes, which a
// schema can bound (maxLength, maxItems).
#pragma once
#include <string>
#include <vector>

namespace pipellm::grammar {

struct JsonRule {
  std::string name;
  std::string body;
  std::vector<std::string> deps;  // rules the body refers to
};

// The rule named `name` ("space", "char", "string", "number", "integer", "boolean", "null",
// "value", "object", "array", "uuid", "date", "time", "date-time", "date-string", "time-string",
// "date-time-string", "integral-part", "decimal-part", "hex4"), or nullptr.
const JsonRule* json_rule(const std::string& name);

// Any JSON value (what OpenAI's response_format json_object asks for, minus the top-level
// object requirement: use json_schema_to_gbnf({"type": "object"}) for that).
std::string any_json_gbnf();

}  // namespace pipellm::grammar

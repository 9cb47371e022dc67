// JSON schema -> GBNF, with llama.cpp's json-schema-to-grammar semantics for the common subset,
// so requests carrying `json_schema` / `response_format` constrain output as llama-server does:
//
// - object: properties (in the schema's order), required, additionalProperties (false: only the
//   listed properties; absent/true/a schema: other keys too, never one of the listed names);
//   required properties come first, optional ones after in order, each at most once
// - array: items (one schema, or a list / prefixItems for tuples), minItems, maxItems
// - string: enum, const, minLength, maxLength, pattern (pattern_gbnf.h), format date, time,
//   date-time, uuid
// - integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum (int_range_gbnf.h); number
//   (ranges are not enforced, as in llama.cpp); boolean; null; a list of types
// - anyOf / oneOf (as a choice: oneOf's exclusivity is not enforced), allOf of object schemas
// - $ref to "#", "#/$defs/...", "#/definitions/..." (any local JSON pointer), recursion included
// - {} or true: any JSON value
//
// Whitespace between tokens is llama.cpp's bounded `space` rule; strings, arrays and extra
// properties are unbounded unless the schema bounds them.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace pipellm::grammar {

// Throws InvalidArgument "json schema: <where>: <what>" for what it cannot express (unknown
// type, remote $ref, an unsupported pattern, an empty integer range, `false`).
std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema);
// nlohmann::json keeps object keys sorted, so properties come out in alphabetical order; parse
// requests with nlohmann::ordered_json to keep the schema's order.
std::string json_schema_to_gbnf(const nlohmann::json& schema);

}  // namespace pipellm::grammar

// Jinja's built-in filters, tests and global functions, and the Python methods of str, list and
// dict that chat templates call (message.content.startswith(...), tool.items(), ...), each with
// the semantics Python's Jinja gives it under Hugging Face's settings. Only non-mutating methods
// exist: HF's sandbox refuses list.append and the like too.
#pragma once
#include <string>

#include "engine/tokenizer/jinja/value.h"

namespace pipellm::jinja {

class Interpreter;

bool is_filter(const std::string& name);
bool is_test(const std::string& name);

// OpError on bad arguments or a value the filter/test does not take.
Value apply_filter(Interpreter& in, const std::string& name, const Value& input, CallArgs& args);
bool apply_test(Interpreter& in, const std::string& name, const Value& input, CallArgs& args);

// The method `name` of str/list/dict values bound to `self`; Undefined when there is none.
Value find_method(const Value& self, const std::string& name);

// Attribute and item access as Jinja's environment.getattr/getitem do them: a missing key,
// index or attribute is Undefined; only Undefined itself cannot be looked into (OpError).
Value get_attr(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

// range, namespace, dict (the template-independent globals).
std::vector<std::pair<std::string, Value>> builtin_globals();

}  // namespace pipellm::jinja

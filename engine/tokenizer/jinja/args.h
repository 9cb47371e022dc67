// Binding a builtin's call arguments to its Python signature: parameter i is the i-th positional
// argument or the keyword of its name. Too many arguments, unknown keywords and wrong types are
// OpErrors naming the builtin, as Python's TypeError would.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/jinja/error.h"
#include "engine/tokenizer/jinja/value.h"

namespace pipellm::jinja {

class ArgReader {
 public:
  // `varargs`: extra positional arguments are allowed (read with rest()).
  ArgReader(const CallArgs& args, std::string fn, std::vector<const char*> names, bool varargs = false)
      : args_(args), fn_(std::move(fn)), names_(std::move(names)) {
    if (!varargs && args_.positional.size() > names_.size()) {
      throw OpError(fn_ + "() takes at most " + std::to_string(names_.size()) + " argument(s), " +
                    std::to_string(args_.positional.size()) + " given");
    }
    for (const auto& [k, v] : args_.keyword) {
      size_t i = 0;
      while (i < names_.size() && k != names_[i]) ++i;
      if (i == names_.size()) throw OpError(fn_ + "() got an unexpected keyword argument '" + k + "'");
      if (i < args_.positional.size()) throw OpError(fn_ + "() got multiple values for argument '" + k + "'");
    }
  }

  // Parameter i, or null when not given.
  const Value* get(size_t i) const {
    if (i < args_.positional.size()) return &args_.positional[i];
    for (const auto& [k, v] : args_.keyword) {
      if (k == names_[i]) return &v;
    }
    return nullptr;
  }
  bool given(size_t i) const {
    const Value* v = get(i);
    return v && !v->is_undefined();
  }
  Value value(size_t i, Value fallback) const {
    const Value* v = get(i);
    return v && !v->is_undefined() ? *v : fallback;
  }
  bool flag(size_t i, bool fallback) const {
    const Value* v = get(i);
    return v && !v->is_undefined() ? v->truthy() : fallback;
  }
  int64_t integer(size_t i, int64_t fallback) const {
    const Value* v = get(i);
    if (!v || v->is_undefined() || v->is_none()) return fallback;
    if (!v->is_int()) throw OpError(fn_ + "(): '" + names_[i] + "' must be an integer, not " + v->type_name());
    return v->as_int();
  }
  // A string parameter; `required` ones must be given.
  std::string text(size_t i, const std::string& fallback, bool required = false) const {
    const Value* v = get(i);
    if (!v || v->is_undefined() || (v->is_none() && !required)) {
      if (required) throw OpError(fn_ + "() missing required argument '" + names_[i] + "'");
      return fallback;
    }
    if (!v->is_string()) throw OpError(fn_ + "(): '" + names_[i] + "' must be a string, not " + v->type_name());
    return v->as_string();
  }
  // Positional arguments after the named parameters.
  std::vector<Value> rest() const {
    if (args_.positional.size() <= names_.size()) return {};
    return std::vector<Value>(args_.positional.begin() + static_cast<std::ptrdiff_t>(names_.size()), args_.positional.end());
  }

 private:
  const CallArgs& args_;
  std::string fn_;
  std::vector<const char*> names_;
};

}  // namespace pipellm::jinja

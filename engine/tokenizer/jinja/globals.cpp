// The global functions a chat template can call: Jinja's range / namespace / dict, and the two
// Hugging Face adds to its environment, raise_exception and strftime_now.
#include <cmath>
#include <ctime>

#include "engine/tokenizer/jinja/args.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/interpreter.h"

namespace pipellm::jinja {

namespace {

Value range(Interpreter& in, CallArgs& a) {
  if (!a.keyword.empty()) throw OpError("range() takes no keyword arguments");
  const auto arg = [&](size_t i) {
    if (!a.positional[i].is_int()) throw OpError(std::string("range() needs integers, not ") + a.positional[i].type_name());
    return a.positional[i].as_int();
  };
  int64_t start = 0, stop, step = 1;
  switch (a.positional.size()) {
    case 1: stop = arg(0); break;
    case 2: start = arg(0), stop = arg(1); break;
    case 3: start = arg(0), stop = arg(1), step = arg(2); break;
    default: throw OpError("range() takes 1 to 3 arguments");
  }
  if (step == 0) throw OpError("range() step must not be zero");
  // Count without overflow: the sandbox refuses ranges above its limit rather than building them.
  const long double span = step > 0 ? static_cast<long double>(stop) - start : static_cast<long double>(start) - stop;
  const long double count = span <= 0 ? 0 : (span + std::abs(static_cast<long double>(step)) - 1) / std::abs(static_cast<long double>(step));
  if (count > in.limits().max_range) {
    throw OpError("range() of " + std::to_string(static_cast<long long>(count)) + " items is above the limit of " +
                  std::to_string(in.limits().max_range));
  }
  in.charge(static_cast<uint64_t>(count));
  std::vector<Value> items;
  const auto n = static_cast<int64_t>(count);
  items.reserve(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) items.push_back(Value::integer(start + k * step));
  return Value::list(std::move(items));
}

// namespace(...) and dict(...): keyword arguments, after the entries of positional dicts.
Value make_mapping(CallArgs& a, Value out, const char* fn) {
  for (const Value& d : a.positional) {
    if (!d.is_dict()) throw OpError(std::string(fn) + "() takes dicts and keyword arguments, not " + d.type_name());
    for (const auto& [k, v] : d.entries()) out.set(k, v);
  }
  for (auto& [k, v] : a.keyword) out.set(k, v);
  return out;
}

Value raise_exception(Interpreter&, CallArgs& a) {
  ArgReader r(a, "raise_exception", {"message"});
  const Value* m = r.get(0);
  throw InvalidArgument("chat template raise_exception: " + (m ? m->str() : std::string("(no message)")));
}

Value strftime_now(Interpreter& in, CallArgs& a) {
  ArgReader r(a, "strftime_now", {"format"});
  const std::string fmt = r.text(0, "", true);
  if (fmt.empty()) return Value::string("");
  // strftime returns 0 both for "too small" and for an empty result: grow a few times, then stop.
  for (size_t size = 64; size <= 4096; size *= 4) {
    std::string buf(size, '\0');
    const size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &in.now());
    if (n > 0) return Value::string(buf.substr(0, n));
  }
  return Value::string("");
}

}  // namespace

std::vector<std::pair<std::string, Value>> builtin_globals() {
  return {
      {"range", Value::function("range", range)},
      {"namespace", Value::function("namespace", [](Interpreter&, CallArgs& a) { return make_mapping(a, Value::namespace_(), "namespace"); })},
      {"dict", Value::function("dict", [](Interpreter&, CallArgs& a) { return make_mapping(a, Value::dict(), "dict"); })},
      {"raise_exception", Value::function("raise_exception", raise_exception)},
      {"strftime_now", Value::function("strftime_now", strftime_now)},
  };
}

}  // namespace pipellm::jinja

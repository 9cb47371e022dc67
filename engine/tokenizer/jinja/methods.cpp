// Attribute, item and slice access, and the Python methods of str / list / dict values.
#include <algorithm>

#include "engine/tokenizer/jinja/args.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/pystr.h"

namespace pipellm::jinja {

namespace {

constexpr const char* kStrMethods[] = {
    "startswith", "endswith", "split", "rsplit", "splitlines", "strip", "lstrip", "rstrip", "upper",
    "lower", "title", "capitalize", "replace", "find", "rfind", "index", "count", "join", "isdigit",
    "isalpha", "isalnum", "isspace", "isupper", "islower"};
constexpr const char* kListMethods[] = {"index", "count"};
constexpr const char* kDictMethods[] = {"items", "keys", "values", "get"};

template <size_t N>
bool has(const char* const (&names)[N], const std::string& s) {
  for (const char* n : names) {
    if (s == n) return true;
  }
  return false;
}

std::vector<Value> strings(const std::vector<std::string>& parts) {
  std::vector<Value> out;
  out.reserve(parts.size());
  for (const auto& p : parts) out.push_back(Value::string(p));
  return out;
}

// startswith / endswith take a string or a tuple of strings.
bool affix(const std::string& s, const Value& arg, bool prefix, const char* fn) {
  const auto test = [&](const Value& a) {
    if (!a.is_string()) throw OpError(std::string(fn) + "() arguments must be str or a tuple of str, not " + a.type_name());
    const std::string& p = a.as_string();
    if (p.size() > s.size()) return false;
    return prefix ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0;
  };
  if (arg.is_list()) {
    for (const Value& a : arg.items()) {
      if (test(a)) return true;
    }
    return false;
  }
  return test(arg);
}

// str.isdigit() and friends, by Unicode category (close to Python's definitions).
bool all_chars(const std::string& s, bool (*pred)(uint32_t)) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();) {
    size_t n;
    if (!pred(pystr::decode_at(s, i, &n))) return false;
    i += n;
  }
  return true;
}
bool is_digit_cp(uint32_t c) { return c >= '0' && c <= '9'; }
bool is_alpha_cp(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= 0xC0 && c != 0xD7 && c != 0xF7 && !pystr::is_space(c)); }
bool is_alnum_cp(uint32_t c) { return is_digit_cp(c) || is_alpha_cp(c); }

Value str_method(const std::string& s, const std::string& m, const CallArgs& a) {
  if (m == "startswith" || m == "endswith") {
    ArgReader r(a, m, {"prefix"});
    if (!r.given(0)) throw OpError(m + "() takes exactly one argument");
    return Value::boolean(affix(s, *r.get(0), m == "startswith", m.c_str()));
  }
  if (m == "split" || m == "rsplit") {
    ArgReader r(a, m, {"sep", "maxsplit"});
    const int64_t maxsplit = r.integer(1, -1);
    if (r.given(0) && !r.get(0)->is_none()) {
      const std::string sep = r.text(0, "");
      if (sep.empty()) throw OpError("empty separator");
      return Value::list(strings(m == "split" ? pystr::split(s, &sep, maxsplit) : pystr::rsplit(s, &sep, maxsplit)));
    }
    return Value::list(strings(m == "split" ? pystr::split(s, nullptr, maxsplit) : pystr::rsplit(s, nullptr, maxsplit)));
  }
  if (m == "splitlines") {
    ArgReader r(a, m, {});
    return Value::list(strings(pystr::splitlines(s)));
  }
  if (m == "strip" || m == "lstrip" || m == "rstrip") {
    ArgReader r(a, m, {"chars"});
    const bool left = m != "rstrip", right = m != "lstrip";
    if (r.given(0) && !r.get(0)->is_none()) {
      const std::string chars = r.text(0, "");
      return Value::string(pystr::strip(s, &chars, left, right));
    }
    return Value::string(pystr::strip(s, nullptr, left, right));
  }
  if (m == "upper" || m == "lower" || m == "title" || m == "capitalize") {
    ArgReader r(a, m, {});
    if (m == "upper") return Value::string(pystr::upper(s));
    if (m == "lower") return Value::string(pystr::lower(s));
    if (m == "title") return Value::string(pystr::title_method(s));
    return Value::string(pystr::capitalize(s));
  }
  if (m == "replace") {
    ArgReader r(a, m, {"old", "new", "count"});
    return Value::string(pystr::replace(s, r.text(0, "", true), r.text(1, "", true), r.integer(2, -1)));
  }
  if (m == "find" || m == "rfind" || m == "index") {
    ArgReader r(a, m, {"sub"});
    const int64_t at = pystr::find(s, r.text(0, "", true), m == "rfind");
    if (m == "index" && at < 0) throw OpError("substring not found");
    return Value::integer(at);
  }
  if (m == "count") {
    ArgReader r(a, m, {"sub"});
    return Value::integer(pystr::count(s, r.text(0, "", true)));
  }
  if (m == "join") {
    ArgReader r(a, m, {"iterable"});
    if (!r.given(0)) throw OpError("join() takes exactly one argument");
    const Value& it = *r.get(0);
    std::vector<Value> items = it.is_list() ? it.items() : std::vector<Value>{};
    if (it.is_string()) items = strings(pystr::chars(it.as_string()));
    if (it.is_dict()) {
      for (const auto& [k, v] : it.entries()) items.push_back(Value::string(k));
    }
    if (!it.is_list() && !it.is_string() && !it.is_dict()) throw OpError(std::string("can only join an iterable, not ") + it.type_name());
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) {
        throw OpError("sequence item " + std::to_string(i) + ": expected str instance, " + items[i].type_name() + " found");
      }
      if (i) out += s;
      out += items[i].as_string();
    }
    return Value::string(std::move(out));
  }
  ArgReader r(a, m, {});
  if (m == "isdigit") return Value::boolean(all_chars(s, is_digit_cp));
  if (m == "isalpha") return Value::boolean(all_chars(s, is_alpha_cp));
  if (m == "isalnum") return Value::boolean(all_chars(s, is_alnum_cp));
  if (m == "isspace") return Value::boolean(all_chars(s, pystr::is_space));
  if (m == "isupper") return Value::boolean(pystr::is_upper(s));
  if (m == "islower") return Value::boolean(pystr::is_lower(s));
  throw OpError("str has no method '" + m + "'");
}

Value list_method(const Value& self, const std::string& m, const CallArgs& a) {
  ArgReader r(a, m, {"value"});
  if (!r.get(0)) throw OpError(m + "() takes exactly one argument");
  const Value& x = *r.get(0);
  const auto& items = self.items();
  if (m == "count") {
    int64_t n = 0;
    for (const Value& v : items) n += equals(v, x) ? 1 : 0;
    return Value::integer(n);
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if (equals(items[i], x)) return Value::integer(static_cast<int64_t>(i));
  }
  throw OpError(x.repr() + " is not in list");
}

Value dict_method(const Value& self, const std::string& m, const CallArgs& a) {
  if (m == "get") {
    ArgReader r(a, m, {"key", "default"});
    if (!r.get(0)) throw OpError("get() takes at least one argument");
    const Value& key = *r.get(0);
    const Value* v = key.is_string() ? self.find(key.as_string()) : nullptr;
    if (v) return *v;
    return r.get(1) ? *r.get(1) : Value::none();
  }
  ArgReader r(a, m, {});
  std::vector<Value> out;
  for (const auto& [k, v] : self.entries()) {
    if (m == "items") out.push_back(Value::tuple({Value::string(k), v}));
    else if (m == "keys") out.push_back(Value::string(k));
    else out.push_back(v);
  }
  return Value::list(std::move(out));
}

// Python's slice.indices(): the positions a[start:stop:step] visits in a sequence of n.
std::vector<size_t> slice_positions(size_t n_items, const Value& start, const Value& stop, const Value& step) {
  const auto part = [](const Value& v, const char* what) -> const Value* {
    if (v.is_undefined() || v.is_none()) return nullptr;
    if (!v.is_int()) throw OpError(std::string("slice ") + what + " must be an integer or none, not " + v.type_name());
    return &v;
  };
  const int64_t n = static_cast<int64_t>(n_items);
  const Value* st = part(step, "step");
  const int64_t k = st ? st->as_int() : 1;
  if (k == 0) throw OpError("slice step cannot be zero");
  const auto clamp = [&](const Value* v, int64_t fallback) {
    if (!v) return fallback;
    int64_t i = v->as_int();
    if (i < 0) i += n;
    if (k > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t b = clamp(part(start, "start"), k > 0 ? 0 : n - 1);
  const int64_t e = clamp(part(stop, "stop"), k > 0 ? n : -1);
  std::vector<size_t> out;
  for (int64_t i = b; k > 0 ? i < e : i > e; i += k) out.push_back(static_cast<size_t>(i));
  return out;
}

}  // namespace

Value find_method(const Value& self, const std::string& name) {
  if (self.is_string() && has(kStrMethods, name)) {
    return Value::function("str." + name, [self, name](Interpreter&, CallArgs& a) { return str_method(self.as_string(), name, a); });
  }
  if (self.is_list() && !self.is_generator() && has(kListMethods, name)) {
    return Value::function("list." + name, [self, name](Interpreter&, CallArgs& a) { return list_method(self, name, a); });
  }
  if (self.is_dict() && !self.is_namespace() && has(kDictMethods, name)) {
    return Value::function("dict." + name, [self, name](Interpreter&, CallArgs& a) { return dict_method(self, name, a); });
  }
  return Value::undefined("'" + std::string(self.type_name()) + " object' has no attribute '" + name + "'");
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) throw OpError(obj.undefined_why());
  if (obj.is_dict()) {
    // Python's getattr comes first: d.items is the method even when d has an "items" key.
    if (!obj.is_namespace()) {
      Value m = find_method(obj, name);
      if (!m.is_undefined()) return m;
    }
    if (const Value* v = obj.find(name)) return *v;
    return Value::undefined("'" + std::string(obj.type_name()) + " object' has no attribute '" + name + "'");
  }
  return find_method(obj, name);
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) throw OpError(obj.undefined_why());
  if (obj.is_dict()) {
    if (key.is_string()) {
      if (const Value* v = obj.find(key.as_string())) return *v;
      if (!obj.is_namespace()) {
        Value m = find_method(obj, key.as_string());
        if (!m.is_undefined()) return m;
      }
    }
    return Value::undefined("'dict object' has no key " + key.repr());
  }
  if (obj.is_generator()) return Value::undefined("'generator' object is not subscriptable");
  if (obj.is_list() || obj.is_string()) {
    if (key.is_int()) {
      const bool str = obj.is_string();
      std::vector<size_t> offsets;
      if (str) offsets = pystr::code_point_offsets(obj.as_string());
      const int64_t n = static_cast<int64_t>(str ? offsets.size() - 1 : obj.items().size());
      int64_t i = key.as_int();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined(std::string(obj.type_name()) + " index " + key.repr() + " out of range");
      const auto u = static_cast<size_t>(i);
      if (!str) return obj.items()[u];
      return Value::string(obj.as_string().substr(offsets[u], offsets[u + 1] - offsets[u]));
    }
    if (key.is_string()) return find_method(obj, key.as_string());
  }
  return Value::undefined("'" + std::string(obj.type_name()) + " object' has no item " + key.repr());
}

Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) throw OpError(obj.undefined_why());
  if (obj.is_list() && !obj.is_generator()) {
    std::vector<Value> out;
    for (size_t i : slice_positions(obj.items().size(), start, stop, step)) out.push_back(obj.items()[i]);
    return obj.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
  }
  if (obj.is_string()) {
    const std::string& s = obj.as_string();
    const std::vector<size_t> offsets = pystr::code_point_offsets(s);
    std::string out;
    for (size_t i : slice_positions(offsets.size() - 1, start, stop, step)) out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
    return Value::string(std::move(out));
  }
  return Value::undefined("'" + std::string(obj.type_name()) + " object' cannot be sliced");
}

}  // namespace pipellm::jinja

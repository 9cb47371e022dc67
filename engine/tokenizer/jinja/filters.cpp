// Jinja's filters as Hugging Face's chat templates see them (tojson is HF's own).
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "engine/tokenizer/jinja/args.h"
#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/interpreter.h"
#include "engine/tokenizer/jinja/json.h"
#include "engine/tokenizer/jinja/operators.h"
#include "engine/tokenizer/jinja/pystr.h"

namespace pipellm::jinja {

namespace {

using FilterFn = Value (*)(Interpreter&, const Value&, const CallArgs&);

// What `for x in v` visits: list items, dict keys, string characters; Undefined is empty.
std::vector<Value> iterate(Interpreter& in, const Value& v) {
  std::vector<Value> out;
  switch (v.kind()) {
    case Value::Kind::kList: out = v.items(); break;
    case Value::Kind::kDict:
      if (v.is_namespace()) throw OpError("'Namespace' object is not iterable");
      for (const auto& [k, x] : v.entries()) out.push_back(Value::string(k));
      break;
    case Value::Kind::kString:
      for (auto& c : pystr::chars(v.as_string())) out.push_back(Value::string(std::move(c)));
      break;
    case Value::Kind::kUndefined: break;
    default: throw OpError(std::string("'") + v.type_name() + "' object is not iterable");
  }
  in.charge(out.size());
  return out;
}

// Jinja's attribute getter for filters: "a.b.0" looks up a, then b, then item 0.
Value attr_path(const Value& item, const std::string& path) {
  Value v = item;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    v = get_item(v, numeric ? Value::integer(std::atoll(part.c_str())) : Value::string(part));
    if (dot == std::string::npos || v.is_undefined()) return v;
    start = dot + 1;
  }
}

std::string attribute_arg(const Value& v) {
  if (v.is_int()) return std::to_string(v.as_int());
  if (!v.is_string()) throw OpError(std::string("attribute must be a string, not ") + v.type_name());
  return v.as_string();
}

// Sort / min / max / unique keys: strings compare lower-cased unless case_sensitive.
Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::string(pystr::lower(v.as_string()));
  return v;
}

Value f_abs(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "abs", {});
  if (v.is_int()) {
    if (v.as_int() == INT64_MIN) throw OpError("integer overflow");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.is_number()) return Value::number(std::fabs(v.as_float()));
  throw OpError(std::string("bad operand type for abs(): '") + v.type_name() + "'");
}

Value f_attr(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "attr", {"name"});
  return get_attr(v, r.text(0, "", true));
}

Value f_capitalize(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "capitalize", {});
  return Value::string(pystr::capitalize(v.str()));
}

Value f_length(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "length", {});
  switch (v.kind()) {
    case Value::Kind::kString: return Value::integer(static_cast<int64_t>(pystr::length(v.as_string())));
    case Value::Kind::kList:
      if (v.is_generator()) break;  // Python: a generator has no len()
      return Value::integer(static_cast<int64_t>(v.items().size()));
    case Value::Kind::kDict:
      if (v.is_namespace()) break;
      return Value::integer(static_cast<int64_t>(v.entries().size()));
    case Value::Kind::kUndefined: return Value::integer(0);
    default: break;
  }
  throw OpError(std::string("object of type '") + v.type_name() + "' has no len()");
}

Value f_default(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "default", {"default_value", "boolean"});
  const bool use_default = v.is_undefined() || (r.flag(1, false) && !v.truthy());
  if (!use_default) return v;
  const Value* d = r.get(0);
  return d ? *d : Value::string("");
}

Value f_dictsort(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "dictsort", {"case_sensitive", "by", "reverse"});
  if (!v.is_dict() || v.is_namespace()) throw OpError(std::string("dictsort needs a dict, not ") + v.type_name());
  const bool cs = r.flag(0, false);
  const std::string by = r.text(1, "key");
  if (by != "key" && by != "value") throw OpError("dictsort: 'by' must be 'key' or 'value'");
  std::vector<Value> items;
  for (const auto& [k, x] : v.entries()) items.push_back(Value::tuple({Value::string(k), x}));
  in.charge(items.size());
  const size_t at = by == "key" ? 0 : 1;
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return less(sort_key(x.items()[at], cs), sort_key(y.items()[at], cs));
  });
  if (r.flag(2, false)) std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

Value f_escape(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "escape", {});
  std::string out;
  for (char c : v.str()) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return Value::string(std::move(out));
}

Value f_first(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "first", {});
  if (v.is_list()) return v.items().empty() ? Value::undefined("first: the sequence is empty") : v.items().front();
  const std::vector<Value> items = iterate(in, v);
  return items.empty() ? Value::undefined("first: the sequence is empty") : items.front();
}

Value f_last(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "last", {});
  if (v.is_list()) return v.items().empty() ? Value::undefined("last: the sequence is empty") : v.items().back();
  const std::vector<Value> items = iterate(in, v);
  return items.empty() ? Value::undefined("last: the sequence is empty") : items.back();
}

// Python's float(str): surrounding whitespace allowed, the whole rest must be the number.
bool parse_float(const std::string& s, double* out) {
  const std::string t = pystr::strip(s, nullptr, true, true);
  if (t.empty()) return false;
  std::string clean;
  for (char c : t) {
    if (c != '_') clean += c;
  }
  char* end = nullptr;
  *out = std::strtod(clean.c_str(), &end);
  return end && *end == '\0';
}

Value f_float(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "float", {"default"});
  if (v.is_undefined()) throw OpError(v.undefined_why());  // float(Undefined) fails in Jinja too
  if (v.is_number()) return Value::number(v.as_float());
  double d;
  if (v.is_string() && parse_float(v.as_string(), &d)) return Value::number(d);
  return r.value(0, Value::number(0.0));
}

Value f_int(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "int", {"default", "base"});
  if (v.is_undefined()) throw OpError(v.undefined_why());
  if (v.is_int()) return Value::integer(v.as_int());
  if (v.is_number()) {
    const double d = v.as_float();
    if (std::isfinite(d) && std::fabs(d) < 9.2e18) return Value::integer(static_cast<int64_t>(d));
  } else if (v.is_string()) {
    const std::string t = pystr::strip(v.as_string(), nullptr, true, true);
    std::string clean;
    for (char c : t) {
      if (c != '_') clean += c;
    }
    char* end = nullptr;
    errno = 0;
    const long long i = std::strtoll(clean.c_str(), &end, static_cast<int>(r.integer(1, 10)));
    if (!clean.empty() && end && *end == '\0' && errno == 0) return Value::integer(i);
    double d;
    if (parse_float(t, &d) && std::isfinite(d) && std::fabs(d) < 9.2e18) return Value::integer(static_cast<int64_t>(d));
  }
  return r.value(0, Value::integer(0));
}

Value f_indent(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "indent", {"width", "first", "blank"});
  if (!v.is_string()) {
    if (v.is_undefined()) throw OpError(v.undefined_why());
    throw OpError(std::string("indent needs a string, not ") + v.type_name());
  }
  const Value width = r.value(0, Value::integer(4));
  const std::string ind = width.is_string() ? width.as_string() : std::string(static_cast<size_t>(std::max<int64_t>(0, width.is_int() ? width.as_int() : 4)), ' ');
  const std::vector<std::string> lines = pystr::splitlines(v.str() + "\n");
  std::string out;
  if (r.flag(2, false)) {
    for (size_t i = 0; i < lines.size(); ++i) out += (i ? "\n" + ind : "") + lines[i];
  } else {
    out = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) out += "\n" + (lines[i].empty() ? "" : ind + lines[i]);
  }
  if (r.flag(1, false)) out = ind + out;
  return Value::string(std::move(out));
}

Value f_items(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "items", {});
  if (v.is_undefined()) return Value::list({});
  if (!v.is_dict() || v.is_namespace()) throw OpError(std::string("items needs a mapping, not ") + v.type_name());
  std::vector<Value> out;
  for (const auto& [k, x] : v.entries()) out.push_back(Value::tuple({Value::string(k), x}));
  in.charge(out.size());
  return Value::generator(std::move(out));
}

Value f_join(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "join", {"d", "attribute"});
  const std::string sep = r.text(0, "");
  const bool by_attr = r.given(1);
  const std::string attr = by_attr ? attribute_arg(*r.get(1)) : "";
  std::string out;
  bool first = true;
  for (const Value& item : iterate(in, v)) {
    if (!first) out += sep;
    first = false;
    out += (by_attr ? attr_path(item, attr) : item).str();
    if (out.size() > in.limits().max_size) throw OpError("join: result larger than the size limit");
  }
  return Value::string(std::move(out));
}

Value f_list(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "list", {});
  return Value::list(iterate(in, v));
}

Value f_lower(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "lower", {});
  return Value::string(pystr::lower(v.str()));
}

Value f_upper(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "upper", {});
  return Value::string(pystr::upper(v.str()));
}

Value f_map(Interpreter& in, const Value& v, const CallArgs& a) {
  std::vector<Value> out;
  const std::vector<Value> items = iterate(in, v);
  bool by_attr = false;
  for (const auto& [k, x] : a.keyword) by_attr |= k == "attribute";
  if (by_attr) {
    ArgReader r(a, "map", {"attribute", "default"});
    const std::string attr = attribute_arg(*r.get(0));
    for (const Value& item : items) {
      Value x = attr_path(item, attr);
      out.push_back(x.is_undefined() && r.get(1) ? *r.get(1) : x);
    }
    return Value::generator(std::move(out));
  }
  if (a.positional.empty() || !a.positional[0].is_string()) throw OpError("map needs a filter name or attribute=");
  const std::string name = a.positional[0].as_string();
  if (!is_filter(name)) throw OpError("map: unknown filter '" + name + "'");
  CallArgs rest;
  rest.positional.assign(a.positional.begin() + 1, a.positional.end());
  rest.keyword = a.keyword;
  for (const Value& item : items) {
    CallArgs each = rest;
    out.push_back(apply_filter(in, name, item, each));
  }
  return Value::generator(std::move(out));
}

Value min_max(Interpreter& in, const Value& v, const CallArgs& a, bool want_max, const char* name) {
  ArgReader r(a, name, {"case_sensitive", "attribute"});
  const bool cs = r.flag(0, false);
  const bool by_attr = r.given(1);
  const std::string attr = by_attr ? attribute_arg(*r.get(1)) : "";
  const std::vector<Value> items = iterate(in, v);
  if (items.empty()) return Value::undefined(std::string(name) + ": the sequence is empty");
  const auto key = [&](const Value& x) { return sort_key(by_attr ? attr_path(x, attr) : x, cs); };
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    if (want_max ? less(key(items[best]), key(items[i])) : less(key(items[i]), key(items[best]))) best = i;
  }
  return items[best];
}
Value f_max(Interpreter& in, const Value& v, const CallArgs& a) { return min_max(in, v, a, true, "max"); }
Value f_min(Interpreter& in, const Value& v, const CallArgs& a) { return min_max(in, v, a, false, "min"); }

// select / reject / selectattr / rejectattr: keep the items whose (attribute's) test is `keep`.
Value select_items(Interpreter& in, const Value& v, const CallArgs& a, bool by_attr, bool keep) {
  if (!a.keyword.empty()) throw OpError("select filters take no keyword arguments");
  size_t next = 0;
  std::string attr;
  if (by_attr) {
    if (a.positional.empty()) throw OpError("selectattr / rejectattr need an attribute name");
    attr = attribute_arg(a.positional[next++]);
  }
  std::string test;
  if (next < a.positional.size()) {
    if (!a.positional[next].is_string()) throw OpError("the test name must be a string");
    test = a.positional[next++].as_string();
    if (!is_test(test)) throw OpError("unknown test '" + test + "'");
  }
  CallArgs test_args;
  test_args.positional.assign(a.positional.begin() + static_cast<std::ptrdiff_t>(next), a.positional.end());
  std::vector<Value> out;
  for (const Value& item : iterate(in, v)) {
    const Value x = by_attr ? attr_path(item, attr) : item;
    CallArgs each = test_args;
    const bool pass = test.empty() ? x.truthy() : apply_test(in, test, x, each);
    if (pass == keep) out.push_back(item);
  }
  return Value::generator(std::move(out));
}
Value f_select(Interpreter& in, const Value& v, const CallArgs& a) { return select_items(in, v, a, false, true); }
Value f_reject(Interpreter& in, const Value& v, const CallArgs& a) { return select_items(in, v, a, false, false); }
Value f_selectattr(Interpreter& in, const Value& v, const CallArgs& a) { return select_items(in, v, a, true, true); }
Value f_rejectattr(Interpreter& in, const Value& v, const CallArgs& a) { return select_items(in, v, a, true, false); }

Value f_replace(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "replace", {"old", "new", "count"});
  const Value* oldv = r.get(0);
  const Value* newv = r.get(1);
  if (!oldv || !newv) throw OpError("replace() needs the old and the new text");
  std::string out = pystr::replace(v.str(), oldv->str(), newv->str(), r.integer(2, -1));
  if (out.size() > in.limits().max_size) throw OpError("replace: result larger than the size limit");
  return Value::string(std::move(out));
}

Value f_reverse(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "reverse", {});
  std::vector<Value> items = iterate(in, v);
  std::reverse(items.begin(), items.end());
  if (!v.is_string()) return Value::generator(std::move(items));  // Python's reversed() iterator
  std::string out;
  for (const Value& c : items) out += c.as_string();
  return Value::string(std::move(out));
}

Value f_round(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "round", {"precision", "method"});
  const int64_t precision = r.integer(0, 0);
  const std::string method = r.text(1, "common");
  if (!v.is_number()) throw OpError(std::string("round needs a number, not ") + v.type_name());
  if (method != "common" && method != "ceil" && method != "floor") throw OpError("round: method must be common, ceil or floor");
  if (v.is_int() && method == "common") return Value::integer(v.as_int());  // Python's round(int) is the int
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_float() * scale;
  const double y = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::nearbyint(x);
  return Value::number(y / scale);
}

Value f_safe(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "safe", {});
  return Value::string(v.str());  // no autoescaping in chat templates: only the conversion remains
}

Value f_sort(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "sort", {"reverse", "case_sensitive", "attribute"});
  const bool cs = r.flag(1, false);
  const bool by_attr = r.given(2);
  const std::string attr = by_attr ? attribute_arg(*r.get(2)) : "";
  std::vector<Value> items = iterate(in, v);
  const auto key = [&](const Value& x) { return sort_key(by_attr ? attr_path(x, attr) : x, cs); };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) { return less(key(x), key(y)); });
  if (r.flag(0, false)) std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

Value f_string(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "string", {});
  return Value::string(v.str());
}

Value f_sum(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "sum", {"attribute", "start"});
  const bool by_attr = r.given(0);
  const std::string attr = by_attr ? attribute_arg(*r.get(0)) : "";
  Value total = r.value(1, Value::integer(0));
  for (const Value& item : iterate(in, v)) {
    total = binary_op(BinaryOp::kAdd, total, by_attr ? attr_path(item, attr) : item, in.limits().max_size);
  }
  return total;
}

Value f_title(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "title", {});
  return Value::string(pystr::title_filter(v.str()));
}

// Hugging Face's tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
Value f_tojson(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions o;
  o.ensure_ascii = r.flag(0, false);
  if (r.given(1) && !r.get(1)->is_none()) {
    const Value& ind = *r.get(1);
    if (ind.is_string()) {
      o.indent_text = ind.as_string();
      o.indent = 0;
    } else if (ind.is_int()) {
      o.indent = static_cast<int>(std::clamp<int64_t>(ind.as_int(), 0, 64));
    } else {
      throw OpError(std::string("tojson: indent must be an integer or a string, not ") + ind.type_name());
    }
    o.item_separator = ",";
  }
  if (r.given(2) && !r.get(2)->is_none()) {
    const Value& sep = *r.get(2);
    if (!sep.is_list() || sep.items().size() != 2 || !sep.items()[0].is_string() || !sep.items()[1].is_string()) {
      throw OpError("tojson: separators must be a pair of strings");
    }
    o.item_separator = sep.items()[0].as_string();
    o.key_separator = sep.items()[1].as_string();
  }
  o.sort_keys = r.flag(3, false);
  std::string out = to_json(v, o);
  if (out.size() > in.limits().max_size) throw OpError("tojson: result larger than the size limit");
  return Value::string(std::move(out));
}

Value f_trim(Interpreter&, const Value& v, const CallArgs& a) {
  ArgReader r(a, "trim", {"chars"});
  if (r.given(0) && !r.get(0)->is_none()) {
    const std::string chars = r.text(0, "");
    return Value::string(pystr::strip(v.str(), &chars, true, true));
  }
  return Value::string(pystr::strip(v.str(), nullptr, true, true));
}

Value f_unique(Interpreter& in, const Value& v, const CallArgs& a) {
  ArgReader r(a, "unique", {"case_sensitive", "attribute"});
  const bool cs = r.flag(0, false);
  const bool by_attr = r.given(1);
  const std::string attr = by_attr ? attribute_arg(*r.get(1)) : "";
  std::vector<Value> out, seen;
  for (const Value& item : iterate(in, v)) {
    const Value k = sort_key(by_attr ? attr_path(item, attr) : item, cs);
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) continue;
    in.charge(seen.size());
    seen.push_back(k);
    out.push_back(item);
  }
  return Value::generator(std::move(out));
}

struct FilterEntry {
  const char* name;
  FilterFn fn;
};

constexpr FilterEntry kFilters[] = {
    {"abs", f_abs},           {"attr", f_attr},         {"capitalize", f_capitalize}, {"count", f_length},
    {"d", f_default},         {"default", f_default},   {"dictsort", f_dictsort},     {"e", f_escape},
    {"escape", f_escape},     {"first", f_first},       {"float", f_float},           {"indent", f_indent},
    {"int", f_int},           {"items", f_items},       {"join", f_join},             {"last", f_last},
    {"length", f_length},     {"list", f_list},         {"lower", f_lower},           {"map", f_map},
    {"max", f_max},           {"min", f_min},           {"reject", f_reject},         {"rejectattr", f_rejectattr},
    {"replace", f_replace},   {"reverse", f_reverse},   {"round", f_round},           {"safe", f_safe},
    {"select", f_select},     {"selectattr", f_selectattr}, {"sort", f_sort},         {"string", f_string},
    {"sum", f_sum},           {"title", f_title},       {"tojson", f_tojson},         {"trim", f_trim},
    {"unique", f_unique},     {"upper", f_upper},
};

FilterFn find_filter(const std::string& name) {
  for (const FilterEntry& f : kFilters) {
    if (name == f.name) return f.fn;
  }
  return nullptr;
}

// ---- tests ----

using TestFn = bool (*)(Interpreter&, const Value&, const CallArgs&);

const Value& one_arg(const CallArgs& a, const char* test) {
  ArgReader r(a, test, {"other"});
  if (!r.get(0)) throw OpError(std::string("test '") + test + "' needs one argument");
  return *r.get(0);
}

bool t_defined(Interpreter&, const Value& v, const CallArgs&) { return !v.is_undefined(); }
bool t_undefined(Interpreter&, const Value& v, const CallArgs&) { return v.is_undefined(); }
bool t_none(Interpreter&, const Value& v, const CallArgs&) { return v.is_none(); }
bool t_boolean(Interpreter&, const Value& v, const CallArgs&) { return v.kind() == Value::Kind::kBool; }
bool t_true(Interpreter&, const Value& v, const CallArgs&) { return v.kind() == Value::Kind::kBool && v.as_bool(); }
bool t_false(Interpreter&, const Value& v, const CallArgs&) { return v.kind() == Value::Kind::kBool && !v.as_bool(); }
bool t_integer(Interpreter&, const Value& v, const CallArgs&) { return v.kind() == Value::Kind::kInt; }
bool t_float(Interpreter&, const Value& v, const CallArgs&) { return v.kind() == Value::Kind::kFloat; }
bool t_number(Interpreter&, const Value& v, const CallArgs&) { return v.is_number(); }
bool t_string(Interpreter&, const Value& v, const CallArgs&) { return v.is_string(); }
bool t_mapping(Interpreter&, const Value& v, const CallArgs&) { return v.is_dict() && !v.is_namespace(); }
// Jinja's Undefined defines __call__ (to fail), so Python's callable() says yes.
bool t_callable(Interpreter&, const Value& v, const CallArgs&) { return v.is_function() || v.is_undefined(); }
// Python's iter() works on str, list, dict and Jinja's Undefined.
bool t_iterable(Interpreter&, const Value& v, const CallArgs&) {
  return v.is_string() || v.is_list() || (v.is_dict() && !v.is_namespace()) || v.is_undefined();
}
bool t_escaped(Interpreter&, const Value&, const CallArgs&) { return false; }
// Jinja: str(value).islower(), so a dict printed in lower case "is lower".
bool t_lower(Interpreter&, const Value& v, const CallArgs&) { return pystr::is_lower(v.str()); }
bool t_upper(Interpreter&, const Value& v, const CallArgs&) { return pystr::is_upper(v.str()); }
// len() and indexing: not a generator (nor a number).
bool t_sequence(Interpreter&, const Value& v, const CallArgs&) {
  return v.is_string() || (v.is_list() && !v.is_generator()) || (v.is_dict() && !v.is_namespace()) || v.is_undefined();
}
// Jinja: value % 2 == 1, value % 2 == 0, value % num == 0 (Python's %, floats included).
bool mod_is(Interpreter& in, const Value& v, const Value& d, int64_t r) {
  return equals(binary_op(BinaryOp::kMod, v, d, in.limits().max_size), Value::integer(r));
}
bool t_odd(Interpreter& in, const Value& v, const CallArgs&) { return mod_is(in, v, Value::integer(2), 1); }
bool t_even(Interpreter& in, const Value& v, const CallArgs&) { return mod_is(in, v, Value::integer(2), 0); }
bool t_divisibleby(Interpreter& in, const Value& v, const CallArgs& a) { return mod_is(in, v, one_arg(a, "divisibleby"), 0); }
bool t_eq(Interpreter&, const Value& v, const CallArgs& a) { return equals(v, one_arg(a, "eq")); }
bool t_ne(Interpreter&, const Value& v, const CallArgs& a) { return !equals(v, one_arg(a, "ne")); }
bool t_lt(Interpreter&, const Value& v, const CallArgs& a) { return compare(CompareOp::kLt, v, one_arg(a, "lt")); }
bool t_le(Interpreter&, const Value& v, const CallArgs& a) { return compare(CompareOp::kLe, v, one_arg(a, "le")); }
bool t_gt(Interpreter&, const Value& v, const CallArgs& a) { return compare(CompareOp::kGt, v, one_arg(a, "gt")); }
bool t_ge(Interpreter&, const Value& v, const CallArgs& a) { return compare(CompareOp::kGe, v, one_arg(a, "ge")); }
bool t_in(Interpreter&, const Value& v, const CallArgs& a) { return contains(one_arg(a, "in"), v); }
bool t_sameas(Interpreter&, const Value& v, const CallArgs& a) {
  const Value& o = one_arg(a, "sameas");
  if (v.kind() != o.kind()) return false;
  if (v.identity() || o.identity()) return v.identity() == o.identity();
  return equals(v, o);  // None, booleans, numbers: Python's interned singletons and small ints
}
bool t_filter(Interpreter&, const Value& v, const CallArgs&) { return v.is_string() && is_filter(v.as_string()); }
bool t_test(Interpreter&, const Value& v, const CallArgs&) { return v.is_string() && is_test(v.as_string()); }

struct TestEntry {
  const char* name;
  TestFn fn;
  int arity;  // arguments after the tested value
};

constexpr TestEntry kTests[] = {
    {"defined", t_defined, 0},   {"undefined", t_undefined, 0}, {"none", t_none, 0},         {"boolean", t_boolean, 0},
    {"true", t_true, 0},         {"false", t_false, 0},         {"integer", t_integer, 0},   {"float", t_float, 0},
    {"number", t_number, 0},     {"string", t_string, 0},       {"mapping", t_mapping, 0},   {"callable", t_callable, 0},
    {"iterable", t_iterable, 0}, {"sequence", t_sequence, 0},   {"escaped", t_escaped, 0},   {"lower", t_lower, 0},
    {"upper", t_upper, 0},       {"odd", t_odd, 0},             {"even", t_even, 0},         {"divisibleby", t_divisibleby, 1},
    {"eq", t_eq, 1},             {"equalto", t_eq, 1},          {"==", t_eq, 1},             {"ne", t_ne, 1},
    {"!=", t_ne, 1},             {"lt", t_lt, 1},               {"lessthan", t_lt, 1},       {"<", t_lt, 1},
    {"le", t_le, 1},             {"<=", t_le, 1},               {"gt", t_gt, 1},             {"greaterthan", t_gt, 1},
    {">", t_gt, 1},              {"ge", t_ge, 1},               {">=", t_ge, 1},             {"in", t_in, 1},
    {"sameas", t_sameas, 1},     {"filter", t_filter, 0},       {"test", t_test, 0},
};

const TestEntry* find_test(const std::string& name) {
  for (const TestEntry& t : kTests) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

}  // namespace

bool is_filter(const std::string& name) { return find_filter(name) != nullptr; }
bool is_test(const std::string& name) { return find_test(name) != nullptr; }

Value apply_filter(Interpreter& in, const std::string& name, const Value& input, CallArgs& args) {
  const FilterFn f = find_filter(name);
  if (!f) throw OpError("unknown filter '" + name + "'");
  return f(in, input, args);
}

bool apply_test(Interpreter& in, const std::string& name, const Value& input, CallArgs& args) {
  const TestEntry* t = find_test(name);
  if (!t) throw OpError("unknown test '" + name + "'");
  const size_t given = args.positional.size() + args.keyword.size();
  if (given > static_cast<size_t>(t->arity)) {
    throw OpError("test '" + name + "' takes " + std::to_string(t->arity) + " argument(s), " + std::to_string(given) + " given");
  }
  return t->fn(in, input, args);
}

}  // namespace pipellm::jinja

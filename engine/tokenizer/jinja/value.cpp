#include "engine/tokenizer/jinja/value.h"

#include <cmath>

#include "engine/tokenizer/jinja/error.h"
#include "engine/tokenizer/jinja/pystr.h"

namespace pipellm::jinja {

Value Value::undefined(std::string why) {
  Value v;
  v.s_ = std::make_shared<const std::string>(std::move(why));
  return v;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}

Value Value::number(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = d;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::list(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<ListData>();
  v.list_->items = std::move(items);
  return v;
}

Value Value::tuple(std::vector<Value> items) {
  Value v = list(std::move(items));
  v.list_->tuple = true;
  return v;
}

Value Value::generator(std::vector<Value> items) {
  Value v = list(std::move(items));
  v.list_->generator = true;
  return v;
}

Value Value::dict() {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<DictData>();
  return v;
}

Value Value::namespace_() {
  Value v = dict();
  v.dict_->is_namespace = true;
  return v;
}

Value Value::function(std::string name, NativeFn fn) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.fn_ = std::make_shared<const Function>(Function{std::move(name), std::move(fn)});
  return v;
}

bool Value::is_tuple() const { return kind_ == Kind::kList && list_->tuple; }
bool Value::is_generator() const { return kind_ == Kind::kList && list_->generator; }
bool Value::is_namespace() const { return kind_ == Kind::kDict && dict_->is_namespace; }

int64_t Value::as_int() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }

double Value::as_float() const {
  switch (kind_) {
    case Kind::kBool: return b_ ? 1.0 : 0.0;
    case Kind::kInt: return static_cast<double>(i_);
    case Kind::kFloat: return f_;
    default: throw OpError(std::string("a number was expected, not '") + type_name() + "'");
  }
}

const std::vector<Value>& Value::items() const { return list_->items; }
const std::vector<std::pair<std::string, Value>>& Value::entries() const { return dict_->entries; }

const Value* Value::find(const std::string& key) const {
  for (const auto& [k, v] : dict_->entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::set(const std::string& key, Value v) {
  for (auto& [k, old] : dict_->entries) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  dict_->entries.emplace_back(key, std::move(v));
}

const std::string& Value::undefined_why() const {
  static const std::string kNone = "a value is undefined";
  return s_ ? *s_ : kNone;
}

const void* Value::identity() const {
  switch (kind_) {
    case Kind::kList: return list_.get();
    case Kind::kDict: return dict_.get();
    case Kind::kFunction: return fn_.get();
    case Kind::kString: return s_.get();
    default: return nullptr;
  }
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return b_;
    case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return f_ != 0;
    case Kind::kString: return !s_->empty();
    case Kind::kList: return list_->generator || !list_->items.empty();
    case Kind::kDict: return dict_->is_namespace || !dict_->entries.empty();  // a namespace is an object
    case Kind::kFunction: return true;
  }
  throw OpError("truthiness of an unknown value kind");
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return list_->generator ? "generator" : list_->tuple ? "tuple" : "list";
    case Kind::kDict: return dict_->is_namespace ? "Namespace" : "dict";
    case Kind::kFunction: return "function";
  }
  return "?";
}

std::string Value::str() const {
  switch (kind_) {
    case Kind::kUndefined: return {};
    case Kind::kString: return *s_;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";  // str() is empty, repr() (inside a list) is not
    case Kind::kNone: return "None";
    case Kind::kBool: return b_ ? "True" : "False";
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat: return pystr::float_repr(f_);
    case Kind::kString: return pystr::repr(*s_);
    case Kind::kList: {
      if (list_->generator) return "<generator object>";
      std::string out = list_->tuple ? "(" : "[";
      for (size_t i = 0; i < list_->items.size(); ++i) {
        if (i) out += ", ";
        out += list_->items[i].repr();
      }
      if (list_->tuple && list_->items.size() == 1) out += ",";
      return out + (list_->tuple ? ")" : "]");
    }
    case Kind::kDict: {
      std::string out = dict_->is_namespace ? "<Namespace {" : "{";
      for (size_t i = 0; i < dict_->entries.size(); ++i) {
        if (i) out += ", ";
        out += pystr::repr(dict_->entries[i].first) + ": " + dict_->entries[i].second.repr();
      }
      return out + (dict_->is_namespace ? "}>" : "}");
    }
    case Kind::kFunction: return "<function " + fn_->name + ">";
  }
  throw OpError("repr of an unknown value kind");
}

bool equals(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind() == K::kFloat || b.kind() == K::kFloat) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kUndefined:
    case K::kNone: return true;
    case K::kString: return a.as_string() == b.as_string();
    case K::kList: {
      if (a.is_generator() || b.is_generator()) return a.identity() == b.identity();
      if (a.is_tuple() != b.is_tuple() || a.items().size() != b.items().size()) return false;
      for (size_t i = 0; i < a.items().size(); ++i) {
        if (!equals(a.items()[i], b.items()[i])) return false;
      }
      return true;
    }
    case K::kDict: {
      if (a.is_namespace() || b.is_namespace()) return a.identity() == b.identity();
      if (a.entries().size() != b.entries().size()) return false;
      for (const auto& [k, v] : a.entries()) {
        const Value* other = b.find(k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    }
    case K::kFunction: return a.identity() == b.identity();
    default: break;
  }
  throw OpError(std::string("cannot compare values of type '") + a.type_name() + "'");
}

bool less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) return a.as_float() < b.as_float();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 order = code point order
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple() && !a.is_generator() && !b.is_generator()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals(x[i], y[i])) return less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  if (a.is_undefined()) throw OpError(a.undefined_why());
  if (b.is_undefined()) throw OpError(b.undefined_why());
  throw OpError(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" + b.type_name() +
                "'");
}

}  // namespace pipellm::jinja

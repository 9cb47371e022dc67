// Values of the Jinja interpreter: Python's data model as chat templates use it (None, bool, int,
// float, str, list/tuple, dict, namespace, callables) plus Jinja's Undefined. Strings, lists and
// dicts are shared, so copying a Value is O(1): templates pass message contents around freely and
// a hostile one must not turn that into quadratic copying. Templates cannot mutate lists or dicts
// (HF renders in Jinja's immutable sandbox); only namespace() objects change in place.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pipellm::jinja {

class Value;
class Interpreter;

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

using NativeFn = std::function<Value(Interpreter&, CallArgs&)>;

struct Function {
  std::string name;
  NativeFn fn;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // Undefined
  // An Undefined that says why when it is used ("'tools' is undefined").
  static Value undefined(std::string why);
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value number(double d);
  static Value string(std::string s);
  static Value list(std::vector<Value> items);
  static Value tuple(std::vector<Value> items);
  // What Jinja's select/map/... filters return: a Python generator. It iterates like a list but is
  // always true, has no len(), cannot be indexed and prints as "<generator object>".
  static Value generator(std::vector<Value> items);
  static Value dict();       // an empty dict
  static Value namespace_();  // an empty namespace()
  static Value function(std::string name, NativeFn fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_function() const { return kind_ == Kind::kFunction; }
  bool is_int() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }  // Python: bool is an int
  bool is_number() const { return is_int() || kind_ == Kind::kFloat; }
  bool is_tuple() const;
  bool is_generator() const;
  bool is_namespace() const;

  bool as_bool() const { return b_; }
  int64_t as_int() const;    // kInt or kBool
  double as_float() const;   // any number
  const std::string& as_string() const { return *s_; }
  const std::vector<Value>& items() const;
  const std::vector<std::pair<std::string, Value>>& entries() const;  // dict / namespace
  const Value* find(const std::string& key) const;                     // dict / namespace
  void set(const std::string& key, Value v);  // dict being built, or a namespace
  const Function& function() const { return *fn_; }
  const std::string& undefined_why() const;

  // Identity of shared objects, for the `sameas` test.
  const void* identity() const;

  bool truthy() const;
  std::string str() const;   // Python str(): what {{ }} prints
  std::string repr() const;  // Python repr(): how str() of a list writes its items
  const char* type_name() const;  // Python's type name ('str', 'dict', ...) for error messages

 private:
  struct ListData {
    std::vector<Value> items;
    bool tuple = false;
    bool generator = false;
  };
  struct DictData {
    std::vector<std::pair<std::string, Value>> entries;
    bool is_namespace = false;
  };

  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;  // kString, or kUndefined's reason
  std::shared_ptr<ListData> list_;
  std::shared_ptr<DictData> dict_;
  std::shared_ptr<const Function> fn_;
};

// Python's == (1 == 1.0 == True; a list never equals a tuple; dicts ignore order).
bool equals(const Value& a, const Value& b);
// Python's < on numbers, strings and sequences; OpError for other pairs.
bool less(const Value& a, const Value& b);

}  // namespace pipellm::jinja

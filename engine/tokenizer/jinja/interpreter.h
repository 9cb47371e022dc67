// Runs a parsed template: statements write to an output string, expressions evaluate to Values.
// Scoping follows Jinja: {% for %} iterations, macro calls and call blocks get their own scope
// (a `set` inside them is gone afterwards, hence namespace()), {% if %} does not. The limits make
// a hostile template fail with a FormatError instead of exhausting time, memory or the stack.
#pragma once
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/jinja/ast.h"

namespace pipellm::jinja {

// Real chat templates stay far below these: a 1000-turn conversation through Qwen 3's template
// takes some 20k steps; a million steps run in about 0.3 s.
struct Limits {
  size_t max_output = size_t{64} << 20;  // bytes of any rendered text (the prompt, a macro's result)
  size_t max_size = size_t{64} << 20;    // bytes of a string / items of a list built by an operation
  uint64_t max_steps = 1'000'000;        // statements run + loop iterations + items filters visit
  int max_call_depth = 64;               // nested macro / caller() calls
  int64_t max_range = 100'000;           // items of range(), as HF's sandbox allows
};

struct Scope;
using ScopePtr = std::shared_ptr<Scope>;

struct Scope {
  explicit Scope(ScopePtr p) : parent(std::move(p)) {}
  const Value* lookup(const std::string& name) const;  // this scope, then its parents
  void set(const std::string& name, Value v);          // in this scope
  ScopePtr parent;
  std::vector<std::pair<std::string, Value>> vars;
};

class Interpreter {
 public:
  Interpreter(const Limits& limits, const std::tm& now) : limits_(limits), now_(now) {}

  // `globals`: the variables the caller passes and the builtins; the template's own top-level
  // `set`s go to a scope below it.
  std::string render(const Body& program, const ScopePtr& globals);

  // For the builtins.
  const Limits& limits() const { return limits_; }
  const std::tm& now() const { return now_; }
  void charge(uint64_t steps);  // counts work against max_steps
  // Counts the copying behind a built string or list (a template appending to a list in a loop
  // is quadratic): about one step per 4 KiB or per 64 items.
  const Value& charge_built(const Value& v);
  Value call(const Value& fn, CallArgs& args);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow exec(const Body& body, const ScopePtr& scope, std::string& out);
  Flow exec_node(const Node& node, const ScopePtr& scope, std::string& out);
  Flow exec_for(const ForNode& node, const ScopePtr& scope, std::string& out);
  void exec_call_block(const CallBlockNode& node, const ScopePtr& scope, std::string& out);
  Value eval(const Expr& e, const ScopePtr& scope);
  Value eval_node(const Expr& e, const ScopePtr& scope);
  Value eval_call(const CallExpr& e, const ScopePtr& scope);
  Value eval_filter(const Expr& e, const ScopePtr& scope, const Value* block_text);
  CallArgs eval_args(const Args& args, const ScopePtr& scope);
  void assign(const Target& target, Value v, const ScopePtr& scope);
  Value make_macro(const MacroNode& node, const ScopePtr& scope);
  // A macro's or a call block's body with its parameters bound (defaults, varargs, kwargs).
  Value run_body(const std::string& name, const std::vector<Param>& params, const Body& body,
                 const ScopePtr& def_scope, CallArgs& args);
  void append(std::string& out, const std::string& text);

  Limits limits_;
  std::tm now_;
  uint64_t steps_ = 0;
  int call_depth_ = 0;
  Pos pos_;  // of the statement running, for limit errors
};

}  // namespace pipellm::jinja

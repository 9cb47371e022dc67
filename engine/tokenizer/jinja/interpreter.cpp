#include "engine/tokenizer/jinja/interpreter.h"

#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/operators.h"
#include "engine/tokenizer/jinja/pystr.h"

namespace pipellm::jinja {

const Value* Scope::lookup(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent.get()) {
    for (const auto& [k, v] : s->vars) {
      if (k == name) return &v;
    }
  }
  return nullptr;
}

void Scope::set(const std::string& name, Value v) {
  for (auto& [k, old] : vars) {
    if (k == name) {
      old = std::move(v);
      return;
    }
  }
  vars.emplace_back(name, std::move(v));
}

namespace {

// Keeps the macro-call depth for the duration of a call.
struct DepthGuard {
  explicit DepthGuard(int& d) : depth(d) { ++depth; }
  ~DepthGuard() { --depth; }
  int& depth;
};

}  // namespace

std::string Interpreter::render(const Body& program, const ScopePtr& globals) {
  auto top = std::make_shared<Scope>(globals);
  std::string out;
  exec(program, top, out);  // break/continue cannot escape: the parser allows them only in loops
  return out;
}

void Interpreter::charge(uint64_t steps) {
  steps_ += steps;
  if (steps_ > limits_.max_steps) {
    fail(pos_, "the template ran more than " + std::to_string(limits_.max_steps) +
                   " steps (statements, loop iterations, items): iteration limit reached");
  }
}

const Value& Interpreter::charge_built(const Value& v) {
  if (v.is_string()) charge(v.as_string().size() / 4096);
  if (v.is_list()) charge(v.items().size() / 64);
  return v;
}

void Interpreter::append(std::string& out, const std::string& text) {
  if (out.size() + text.size() > limits_.max_output) {
    fail(pos_, "the rendered text grew beyond " + std::to_string(limits_.max_output) + " bytes: output size limit reached");
  }
  out += text;
}

Value Interpreter::call(const Value& fn, CallArgs& args) {
  if (fn.is_function()) return fn.function().fn(*this, args);
  if (fn.is_undefined()) throw OpError(fn.undefined_why() + " (it was called as a function)");
  throw OpError(std::string("'") + fn.type_name() + "' object is not callable");
}

Interpreter::Flow Interpreter::exec(const Body& body, const ScopePtr& scope, std::string& out) {
  for (const NodePtr& n : body) {
    const Flow f = exec_node(*n, scope, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec_node(const Node& node, const ScopePtr& scope, std::string& out) {
  pos_ = node.pos;
  charge(1);
  try {
    switch (node.kind) {
      case NodeKind::kText:
        append(out, static_cast<const TextNode&>(node).text);
        return Flow::kNormal;
      case NodeKind::kOutput: {
        const Value v = eval(*static_cast<const OutputNode&>(node).expr, scope);
        pos_ = node.pos;
        append(out, v.str());
        return Flow::kNormal;
      }
      case NodeKind::kIf: {
        const auto& n = static_cast<const IfNode&>(node);
        for (const auto& [cond, body] : n.branches) {
          if (eval(*cond, scope).truthy()) return exec(body, scope, out);
        }
        return exec(n.otherwise, scope, out);
      }
      case NodeKind::kFor: return exec_for(static_cast<const ForNode&>(node), scope, out);
      case NodeKind::kSet: {
        const auto& n = static_cast<const SetNode&>(node);
        assign(n.target, eval(*n.value, scope), scope);
        return Flow::kNormal;
      }
      case NodeKind::kSetBlock: {
        const auto& n = static_cast<const SetBlockNode&>(node);
        std::string text;
        exec(n.body, scope, text);
        Value v = Value::string(std::move(text));
        if (n.filter) v = eval_filter(*n.filter, scope, &v);
        assign(n.target, std::move(v), scope);
        return Flow::kNormal;
      }
      case NodeKind::kMacro: {
        const auto& n = static_cast<const MacroNode&>(node);
        scope->set(n.name, make_macro(n, scope));
        return Flow::kNormal;
      }
      case NodeKind::kCallBlock:
        exec_call_block(static_cast<const CallBlockNode&>(node), scope, out);
        return Flow::kNormal;
      case NodeKind::kFilterBlock: {
        const auto& n = static_cast<const FilterBlockNode&>(node);
        std::string text;
        exec(n.body, scope, text);
        const Value input = Value::string(std::move(text));
        append(out, eval_filter(*n.filter, scope, &input).str());
        return Flow::kNormal;
      }
      case NodeKind::kBreak: return Flow::kBreak;
      case NodeKind::kContinue: return Flow::kContinue;
      case NodeKind::kGeneration: return exec(static_cast<const GenerationNode&>(node).body, scope, out);
    }
  } catch (const OpError& e) {
    fail(node.pos, e.what());
  }
  fail(node.pos, "internal error: unknown statement kind " + std::to_string(static_cast<int>(node.kind)));
}

Interpreter::Flow Interpreter::exec_for(const ForNode& node, const ScopePtr& scope, std::string& out) {
  const Value seq = eval(*node.iter, scope);
  std::vector<Value> items;
  switch (seq.kind()) {
    case Value::Kind::kList: items = seq.items(); break;
    case Value::Kind::kDict:
      if (seq.is_namespace()) throw OpError("'Namespace' object is not iterable");
      for (const auto& [k, v] : seq.entries()) items.push_back(Value::string(k));
      break;
    case Value::Kind::kString:
      for (auto& c : pystr::chars(seq.as_string())) items.push_back(Value::string(std::move(c)));
      break;
    case Value::Kind::kUndefined: break;
    default: throw OpError(std::string("'") + seq.type_name() + "' object is not iterable");
  }
  if (node.filter) {  // `for x in y if cond`: the loop (and loop.index/length) sees only the kept items
    std::vector<Value> kept;
    for (Value& item : items) {
      charge(1);
      auto s = std::make_shared<Scope>(scope);
      assign(node.target, item, s);
      if (eval(*node.filter, s).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec(node.otherwise, scope, out);
  const auto n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    pos_ = node.pos;
    charge(1);
    auto s = std::make_shared<Scope>(scope);
    Value loop = Value::dict();
    loop.set("index", Value::integer(i + 1));
    loop.set("index0", Value::integer(i));
    loop.set("revindex", Value::integer(n - i));
    loop.set("revindex0", Value::integer(n - i - 1));
    loop.set("first", Value::boolean(i == 0));
    loop.set("last", Value::boolean(i == n - 1));
    loop.set("length", Value::integer(n));
    loop.set("depth", Value::integer(1));
    loop.set("depth0", Value::integer(0));
    if (i > 0) loop.set("previtem", items[static_cast<size_t>(i - 1)]);
    if (i + 1 < n) loop.set("nextitem", items[static_cast<size_t>(i + 1)]);
    loop.set("cycle", Value::function("loop.cycle", [i](Interpreter&, CallArgs& a) {
               if (a.positional.empty()) throw OpError("loop.cycle() needs at least one value");
               return a.positional[static_cast<size_t>(i) % a.positional.size()];
             }));
    s->set("loop", std::move(loop));
    assign(node.target, items[static_cast<size_t>(i)], s);
    if (exec(node.body, s, out) == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

void Interpreter::assign(const Target& target, Value v, const ScopePtr& scope) {
  if (!target.attr.empty()) {
    const Value* ns = scope->lookup(target.names[0]);
    if (!ns || !ns->is_namespace()) {
      throw OpError("cannot set '" + target.names[0] + "." + target.attr + "': '" + target.names[0] +
                    "' is not a namespace()");
    }
    Value shared = *ns;  // shares the namespace's storage
    shared.set(target.attr, std::move(v));
    return;
  }
  if (!target.unpack) {
    scope->set(target.names[0], std::move(v));
    return;
  }
  std::vector<Value> parts;
  if (v.is_list()) {
    parts = v.items();
  } else if (v.is_string()) {
    for (auto& c : pystr::chars(v.as_string())) parts.push_back(Value::string(std::move(c)));
  } else if (v.is_dict() && !v.is_namespace()) {
    for (const auto& [k, x] : v.entries()) parts.push_back(Value::string(k));
  } else {
    throw OpError(std::string("cannot unpack a non-iterable '") + v.type_name() + "' object");
  }
  if (parts.size() != target.names.size()) {
    throw OpError(std::string(parts.size() > target.names.size() ? "too many" : "not enough") +
                  " values to unpack (expected " + std::to_string(target.names.size()) + ", got " +
                  std::to_string(parts.size()) + ")");
  }
  for (size_t i = 0; i < parts.size(); ++i) scope->set(target.names[i], std::move(parts[i]));
}

// A macro keeps a weak reference to the scope it was defined in (a strong one would be a cycle:
// the scope holds the macro); calling it after that scope is gone is an error, not a crash.
Value Interpreter::make_macro(const MacroNode& node, const ScopePtr& scope) {
  const MacroNode* m = &node;
  std::weak_ptr<Scope> def = scope;
  return Value::function(node.name, [m, def](Interpreter& in, CallArgs& args) {
    const ScopePtr s = def.lock();
    if (!s) throw OpError("macro '" + m->name + "' was called after the scope defining it ended");
    return in.run_body(m->name, m->params, m->body, s, args);
  });
}

Value Interpreter::run_body(const std::string& name, const std::vector<Param>& params, const Body& body,
                            const ScopePtr& def_scope, CallArgs& args) {
  DepthGuard guard(call_depth_);
  if (call_depth_ > limits_.max_call_depth) {
    fail(pos_, "macro calls nested deeper than " + std::to_string(limits_.max_call_depth) + " (recursion limit reached)");
  }
  charge(1);
  auto s = std::make_shared<Scope>(def_scope);
  std::vector<bool> bound(params.size(), false);
  std::vector<Value> varargs;
  Value kwargs = Value::dict();
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < params.size()) {
      s->set(params[i].name, args.positional[i]);
      bound[i] = true;
    } else {
      varargs.push_back(args.positional[i]);
    }
  }
  for (auto& [k, v] : args.keyword) {
    if (k == "caller") {
      s->set("caller", v);
      continue;
    }
    size_t j = 0;
    while (j < params.size() && params[j].name != k) ++j;
    if (j == params.size()) {
      kwargs.set(k, v);
      continue;
    }
    if (bound[j]) throw OpError("macro '" + name + "' got multiple values for argument '" + k + "'");
    s->set(k, v);
    bound[j] = true;
  }
  for (size_t j = 0; j < params.size(); ++j) {
    if (bound[j]) continue;
    s->set(params[j].name, params[j].default_value
                               ? eval(*params[j].default_value, s)
                               : Value::undefined("parameter '" + params[j].name + "' of macro '" + name +
                                                  "' was not given"));
  }
  s->set("varargs", Value::tuple(std::move(varargs)));
  s->set("kwargs", std::move(kwargs));
  std::string out;
  exec(body, s, out);
  return Value::string(std::move(out));
}

void Interpreter::exec_call_block(const CallBlockNode& node, const ScopePtr& scope, std::string& out) {
  const CallBlockNode* cb = &node;
  std::weak_ptr<Scope> where = scope;
  Value caller = Value::function("caller", [cb, where](Interpreter& in, CallArgs& args) {
    const ScopePtr s = where.lock();
    if (!s) throw OpError("caller() was called after its {% call %} block ended");
    // The call block's body runs like a macro whose parameters are the caller's.
    return in.run_body("caller", cb->caller_params, cb->body, s, args);
  });
  const auto& call = static_cast<const CallExpr&>(*node.call);
  const Value fn = eval(*call.callee, scope);
  CallArgs args = eval_args(call.args, scope);
  args.keyword.emplace_back("caller", std::move(caller));
  Value result;
  try {
    result = this->call(fn, args);
  } catch (const OpError& e) {
    fail(call.pos, e.what());
  }
  pos_ = node.pos;
  append(out, result.str());
}

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  try {
    return eval_node(e, scope);
  } catch (const OpError& err) {
    fail(e.pos, err.what());
  }
}

Value Interpreter::eval_node(const Expr& e, const ScopePtr& scope) {
  switch (e.kind) {
    case ExprKind::kLiteral: return static_cast<const LiteralExpr&>(e).value;
    case ExprKind::kName: {
      const auto& n = static_cast<const NameExpr&>(e);
      const Value* v = scope->lookup(n.name);
      return v ? *v : Value::undefined("'" + n.name + "' is undefined");
    }
    case ExprKind::kList: {
      const auto& l = static_cast<const ListExpr&>(e);
      std::vector<Value> items;
      items.reserve(l.items.size());
      for (const ExprPtr& x : l.items) items.push_back(eval(*x, scope));
      return l.tuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
    }
    case ExprKind::kDict: {
      Value d = Value::dict();
      for (const auto& [k, v] : static_cast<const DictExpr&>(e).items) {
        const Value key = eval(*k, scope);
        if (!key.is_string()) throw OpError(std::string("dict keys must be strings here, not ") + key.type_name());
        d.set(key.as_string(), eval(*v, scope));
      }
      return d;
    }
    case ExprKind::kGetattr: {
      const auto& g = static_cast<const GetattrExpr&>(e);
      return get_attr(eval(*g.object, scope), g.attr);
    }
    case ExprKind::kGetitem: {
      const auto& g = static_cast<const GetitemExpr&>(e);
      const Value obj = eval(*g.object, scope);
      return get_item(obj, eval(*g.index, scope));
    }
    case ExprKind::kSlice: {
      const auto& s = static_cast<const SliceExpr&>(e);
      const Value obj = eval(*s.object, scope);
      const auto part = [&](const ExprPtr& p) { return p ? eval(*p, scope) : Value::none(); };
      return get_slice(obj, part(s.start), part(s.stop), part(s.step));
    }
    case ExprKind::kCall: {
      const auto& c = static_cast<const CallExpr&>(e);
      const Value fn = eval(*c.callee, scope);
      CallArgs args = eval_args(c.args, scope);
      return call(fn, args);
    }
    case ExprKind::kFilter: return eval_filter(e, scope, nullptr);
    case ExprKind::kTest: {
      const auto& t = static_cast<const TestExpr&>(e);
      const Value v = eval(*t.operand, scope);
      CallArgs args = eval_args(t.args, scope);
      bool r;
      try {
        r = apply_test(*this, t.name, v, args);
      } catch (const OpError& err) {
        fail(t.pos, "test '" + t.name + "': " + err.what());
      }
      return Value::boolean(r != t.negated);
    }
    case ExprKind::kUnary: {
      const auto& u = static_cast<const UnaryExpr&>(e);
      return unary_op(u.op, eval(*u.operand, scope));
    }
    case ExprKind::kBinary: {
      const auto& b = static_cast<const BinaryExpr&>(e);
      Value left = eval(*b.left, scope);
      if (b.op == BinaryOp::kAnd) return left.truthy() ? eval(*b.right, scope) : left;
      if (b.op == BinaryOp::kOr) return left.truthy() ? left : eval(*b.right, scope);
      return charge_built(binary_op(b.op, left, eval(*b.right, scope), limits_.max_size));
    }
    case ExprKind::kConcat: {
      std::string s;
      for (const ExprPtr& p : static_cast<const ConcatExpr&>(e).parts) {
        const std::string part = eval(*p, scope).str();
        if (s.size() + part.size() > limits_.max_size) throw OpError("'~' result larger than the size limit");
        s += part;
      }
      return charge_built(Value::string(std::move(s)));
    }
    case ExprKind::kCompare: {
      const auto& c = static_cast<const CompareExpr&>(e);
      Value left = eval(*c.first, scope);
      for (const auto& [op, x] : c.rest) {  // Python chains: a < b < c is a < b and b < c
        Value right = eval(*x, scope);
        if (!compare(op, left, right)) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case ExprKind::kCond: {
      const auto& c = static_cast<const CondExpr&>(e);
      if (eval(*c.cond, scope).truthy()) return eval(*c.then, scope);
      if (c.otherwise) return eval(*c.otherwise, scope);
      return Value::undefined("the conditional expression's condition was false and it has no else");
    }
  }
  throw OpError("internal error: unknown expression kind " + std::to_string(static_cast<int>(e.kind)));
}

// A filter expression; in {% filter %} blocks and {% set x | f %} the innermost operand is the
// block's text.
Value Interpreter::eval_filter(const Expr& e, const ScopePtr& scope, const Value* block_text) {
  const auto& f = static_cast<const FilterExpr&>(e);
  Value input;
  if (!f.operand) {
    if (!block_text) throw OpError("internal error: a filter without its operand");
    input = *block_text;
  } else if (block_text && f.operand->kind == ExprKind::kFilter) {
    input = eval_filter(*f.operand, scope, block_text);
  } else {
    input = eval(*f.operand, scope);
  }
  CallArgs args = eval_args(f.args, scope);
  try {
    return charge_built(apply_filter(*this, f.name, input, args));
  } catch (const OpError& err) {
    fail(f.pos, "filter '" + f.name + "': " + err.what());
  }
}

CallArgs Interpreter::eval_args(const Args& args, const ScopePtr& scope) {
  CallArgs out;
  out.positional.reserve(args.positional.size());
  for (const ExprPtr& p : args.positional) out.positional.push_back(eval(*p, scope));
  for (const auto& [k, v] : args.keyword) out.keyword.emplace_back(k, eval(*v, scope));
  return out;
}

}  // namespace pipellm::jinja

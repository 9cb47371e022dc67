#include "engine/tokenizer/jinja/parser.h"

#include <algorithm>

#include "engine/tokenizer/jinja/builtins.h"

namespace pipellm::jinja {

namespace {

std::string describe(const Token& t) {
  switch (t.type) {
    case TokenType::kText: return "template text";
    case TokenType::kVarBegin: return "'{{'";
    case TokenType::kVarEnd: return "end of expression '}}'";
    case TokenType::kBlockBegin: return "'{%'";
    case TokenType::kBlockEnd: return "end of tag '%}'";
    case TokenType::kName: return "'" + t.text + "'";
    case TokenType::kString: return "a string";
    case TokenType::kInt:
    case TokenType::kFloat: return "a number";
    case TokenType::kOperator: return "'" + t.text + "'";
    case TokenType::kEnd: return "end of template";
  }
  return "?";
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : toks_(tokens) {}

  Body parse_template() {
    std::string end;
    return parse_body({}, &end, Pos{}, "");
  }

 private:
  // Bounds the recursion of nested expressions and blocks.
  struct Nest {
    explicit Nest(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxNesting) p_.error("nesting deeper than " + std::to_string(kMaxNesting) + " levels");
    }
    ~Nest() { --p_.depth_; }
    Parser& p_;
  };

  const Token& cur() const { return toks_[i_]; }
  const Token& peek() const { return toks_[std::min(i_ + 1, toks_.size() - 1)]; }
  void next() {
    if (i_ + 1 < toks_.size()) ++i_;
  }
  bool is_op(const char* op) const { return cur().type == TokenType::kOperator && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == TokenType::kName && cur().text == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }
  [[noreturn]] void error(const std::string& msg) const { fail(cur().pos, msg); }
  void expect_op(const char* op) {
    if (!skip_op(op)) error(std::string("expected '") + op + "', got " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != TokenType::kName) error("expected a name, got " + describe(cur()));
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().type != TokenType::kBlockEnd) error("expected end of tag '%}', got " + describe(cur()));
    next();
  }

  // Statements until one of `end_tags` ({% endfor %}, {% else %}, ...); returns with the tag's
  // name consumed and *found set, the rest of that tag left to the caller.
  Body parse_body(const std::vector<std::string>& end_tags, std::string* found, Pos open, const std::string& what) {
    Nest nest(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case TokenType::kText:
          body.push_back(std::make_unique<TextNode>(t.pos, t.text));
          next();
          break;
        case TokenType::kVarBegin: {
          const Pos p = t.pos;
          next();
          ExprPtr e = parse_tuple(false, true, {}, false);
          if (cur().type != TokenType::kVarEnd) error("expected end of expression '}}', got " + describe(cur()));
          next();
          body.push_back(std::make_unique<OutputNode>(p, std::move(e)));
          break;
        }
        case TokenType::kBlockBegin: {
          const Pos p = t.pos;
          next();
          if (cur().type != TokenType::kName) error("expected a tag name after '{%', got " + describe(cur()));
          const std::string tag = cur().text;
          if (contains(end_tags, tag)) {
            *found = tag;
            next();
            return body;
          }
          body.push_back(parse_statement(tag, p));
          break;
        }
        case TokenType::kEnd:
          if (!end_tags.empty()) {
            fail(open, "'{% " + what + " %}' is never closed (expected '{% " + end_tags.front() + " %}')");
          }
          return body;
        default:
          error("unexpected " + describe(t));
      }
    }
  }

  NodePtr parse_statement(const std::string& tag, Pos p) {
    if (tag == "if") return parse_if(p);
    if (tag == "for") return parse_for(p);
    if (tag == "set") return parse_set(p);
    if (tag == "macro") return parse_macro(p);
    if (tag == "call") return parse_call_block(p);
    if (tag == "filter") return parse_filter_block(p);
    if (tag == "generation") return parse_generation(p);
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) error("'" + tag + "' outside a for loop");
      next();
      expect_block_end();
      return std::make_unique<SimpleNode>(tag == "break" ? NodeKind::kBreak : NodeKind::kContinue, p);
    }
    static const char* const kUnsupported[] = {"include", "import", "from", "extends", "block", "with",
                                               "autoescape", "do", "trans", "print", "raw"};
    for (const char* u : kUnsupported) {
      if (tag == u) error("the '{% " + tag + " %}' tag is not supported");
    }
    static const char* const kClosers[] = {"endif", "endfor", "endset", "endmacro", "endcall", "endfilter",
                                           "endgeneration", "else", "elif", "endraw"};
    for (const char* c : kClosers) {
      if (tag == c) error("unexpected '{% " + tag + " %}' (nothing open that it closes)");
    }
    error("unknown tag '" + tag + "'");
  }

  NodePtr parse_if(Pos p) {
    next();
    auto node = std::make_unique<IfNode>(p);
    ExprPtr cond = parse_tuple(false, false, {}, false);
    expect_block_end();
    while (true) {
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, &end, p, "if");
      node->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") {
        cond = parse_tuple(false, false, {}, false);
        expect_block_end();
        continue;
      }
      expect_block_end();
      if (end == "else") {
        node->otherwise = parse_body({"endif"}, &end, p, "if");
        expect_block_end();
      }
      return node;
    }
  }

  NodePtr parse_for(Pos p) {
    next();
    auto node = std::make_unique<ForNode>(p);
    node->target = parse_assign_target(false, {"in"});
    if (!skip_name("in")) error("expected 'in' in the for tag, got " + describe(cur()));
    node->iter = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) node->filter = parse_expression(true);
    if (is_name("recursive")) error("recursive for loops are not supported");
    expect_block_end();
    ++loop_depth_;
    std::string end;
    node->body = parse_body({"endfor", "else"}, &end, p, "for");
    --loop_depth_;
    expect_block_end();
    if (end == "else") {
      node->otherwise = parse_body({"endfor"}, &end, p, "for");
      expect_block_end();
    }
    return node;
  }

  NodePtr parse_set(Pos p) {
    next();
    Target target = parse_assign_target(true, {});
    if (skip_op("=")) {
      ExprPtr value = parse_tuple(false, true, {}, false);
      expect_block_end();
      return std::make_unique<SetNode>(p, std::move(target), std::move(value));
    }
    auto node = std::make_unique<SetBlockNode>(p);
    node->target = std::move(target);
    if (is_op("|")) node->filter = parse_filters(nullptr, false);
    expect_block_end();
    std::string end;
    node->body = parse_body({"endset"}, &end, p, "set");
    expect_block_end();
    return node;
  }

  NodePtr parse_macro(Pos p) {
    next();
    auto node = std::make_unique<MacroNode>(p);
    node->name = expect_name();
    node->params = parse_signature();
    expect_block_end();
    const int saved = loop_depth_;  // a macro body is not inside the caller's loop
    loop_depth_ = 0;
    std::string end;
    node->body = parse_body({"endmacro"}, &end, p, "macro");
    loop_depth_ = saved;
    expect_block_end();
    return node;
  }

  NodePtr parse_call_block(Pos p) {
    next();
    auto node = std::make_unique<CallBlockNode>(p);
    if (is_op("(")) node->caller_params = parse_signature();
    node->call = parse_expression(true);
    if (node->call->kind != ExprKind::kCall) fail(node->call->pos, "{% call %} needs a macro call");
    expect_block_end();
    const int saved = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    node->body = parse_body({"endcall"}, &end, p, "call");
    loop_depth_ = saved;
    expect_block_end();
    return node;
  }

  NodePtr parse_filter_block(Pos p) {
    next();
    auto node = std::make_unique<FilterBlockNode>(p);
    node->filter = parse_filters(nullptr, true);
    expect_block_end();
    std::string end;
    node->body = parse_body({"endfilter"}, &end, p, "filter");
    expect_block_end();
    return node;
  }

  NodePtr parse_generation(Pos p) {
    next();
    expect_block_end();
    auto node = std::make_unique<GenerationNode>(p);
    std::string end;
    node->body = parse_body({"endgeneration"}, &end, p, "generation");
    expect_block_end();
    return node;
  }

  std::vector<Param> parse_signature() {
    std::vector<Param> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      Param prm;
      prm.name = expect_name();
      if (skip_op("=")) prm.default_value = parse_expression(true);
      params.push_back(std::move(prm));
    }
    expect_op(")");
    return params;
  }

  // A name, names to unpack (a, b / (a, b)), or with_namespace: ns.attr.
  Target parse_assign_target(bool with_namespace, const std::vector<std::string>& extra_end) {
    Target t;
    if (with_namespace && cur().type == TokenType::kName && peek().type == TokenType::kOperator && peek().text == ".") {
      t.names.push_back(expect_name());
      next();
      t.attr = expect_name();
      return t;
    }
    const bool parens = skip_op("(");
    while (true) {
      const Pos p = cur().pos;
      std::string n = expect_name();
      static const char* const kConst[] = {"true", "false", "True", "False", "none", "None"};
      for (const char* c : kConst) {
        if (n == c) fail(p, "cannot assign to '" + n + "'");
      }
      t.names.push_back(std::move(n));
      if (!skip_op(",")) break;
      t.unpack = true;
      if (is_tuple_end(extra_end) || (parens && is_op(")"))) break;
    }
    if (parens) {
      expect_op(")");
      t.unpack = true;
    }
    return t;
  }

  bool is_tuple_end(const std::vector<std::string>& extra_end) const {
    if (cur().type == TokenType::kVarEnd || cur().type == TokenType::kBlockEnd || is_op(")")) return true;
    return cur().type == TokenType::kName && contains(extra_end, cur().text);
  }

  // ---- expressions ----

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    Nest nest(*this);
    const Pos p = cur().pos;
    ExprPtr e = parse_or();
    while (skip_name("if")) {
      ExprPtr cond = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
      e = std::make_unique<CondExpr>(p, std::move(cond), std::move(e), std::move(otherwise));
    }
    return e;
  }

  ExprPtr parse_or() {
    const Pos p = cur().pos;
    ExprPtr e = parse_and();
    while (skip_name("or")) e = std::make_unique<BinaryExpr>(p, BinaryOp::kOr, std::move(e), parse_and());
    return e;
  }

  ExprPtr parse_and() {
    const Pos p = cur().pos;
    ExprPtr e = parse_not();
    while (skip_name("and")) e = std::make_unique<BinaryExpr>(p, BinaryOp::kAnd, std::move(e), parse_not());
    return e;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      Nest nest(*this);
      const Pos p = cur().pos;
      next();
      return std::make_unique<UnaryExpr>(p, UnaryOp::kNot, parse_not());
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Pos p = cur().pos;
    ExprPtr first = parse_math1();
    std::unique_ptr<CompareExpr> cmp;
    while (true) {
      CompareOp op;
      if (skip_op("==")) op = CompareOp::kEq;
      else if (skip_op("!=")) op = CompareOp::kNe;
      else if (skip_op("<")) op = CompareOp::kLt;
      else if (skip_op("<=")) op = CompareOp::kLe;
      else if (skip_op(">")) op = CompareOp::kGt;
      else if (skip_op(">=")) op = CompareOp::kGe;
      else if (skip_name("in")) op = CompareOp::kIn;
      else if (is_name("not") && peek().type == TokenType::kName && peek().text == "in") {
        next();
        next();
        op = CompareOp::kNotIn;
      } else {
        break;
      }
      if (!cmp) cmp = std::make_unique<CompareExpr>(p, std::move(first));
      cmp->rest.emplace_back(op, parse_math1());
    }
    if (!cmp) return first;
    return cmp;
  }

  ExprPtr parse_math1() {
    const Pos p = cur().pos;
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const BinaryOp op = is_op("+") ? BinaryOp::kAdd : BinaryOp::kSub;
      next();
      e = std::make_unique<BinaryExpr>(p, op, std::move(e), parse_concat());
    }
    return e;
  }

  ExprPtr parse_concat() {
    const Pos p = cur().pos;
    ExprPtr e = parse_math2();
    if (!is_op("~")) return e;
    auto c = std::make_unique<ConcatExpr>(p);
    c->parts.push_back(std::move(e));
    while (skip_op("~")) c->parts.push_back(parse_math2());
    return c;
  }

  ExprPtr parse_math2() {
    const Pos p = cur().pos;
    ExprPtr e = parse_pow();
    while (true) {
      BinaryOp op;
      if (is_op("*")) op = BinaryOp::kMul;
      else if (is_op("/")) op = BinaryOp::kDiv;
      else if (is_op("//")) op = BinaryOp::kFloorDiv;
      else if (is_op("%")) op = BinaryOp::kMod;
      else break;
      next();
      e = std::make_unique<BinaryExpr>(p, op, std::move(e), parse_pow());
    }
    return e;
  }

  ExprPtr parse_pow() {
    const Pos p = cur().pos;
    ExprPtr e = parse_unary(true);
    while (skip_op("**")) e = std::make_unique<BinaryExpr>(p, BinaryOp::kPow, std::move(e), parse_unary(true));
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    Nest nest(*this);
    const Pos p = cur().pos;
    ExprPtr e;
    if (skip_op("-")) {
      e = std::make_unique<UnaryExpr>(p, UnaryOp::kNeg, parse_unary(false));
    } else if (skip_op("+")) {
      e = std::make_unique<UnaryExpr>(p, UnaryOp::kPos, parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const Pos p = t.pos;
    switch (t.type) {
      case TokenType::kName: {
        const std::string n = t.text;
        next();
        if (n == "true" || n == "True") return std::make_unique<LiteralExpr>(p, Value::boolean(true));
        if (n == "false" || n == "False") return std::make_unique<LiteralExpr>(p, Value::boolean(false));
        if (n == "none" || n == "None") return std::make_unique<LiteralExpr>(p, Value::none());
        return std::make_unique<NameExpr>(p, n);
      }
      case TokenType::kString: {
        std::string s;
        while (cur().type == TokenType::kString) {  // adjacent literals join, as in Python
          s += cur().text;
          next();
        }
        return std::make_unique<LiteralExpr>(p, Value::string(std::move(s)));
      }
      case TokenType::kInt: {
        const int64_t v = t.ival;
        next();
        return std::make_unique<LiteralExpr>(p, Value::integer(v));
      }
      case TokenType::kFloat: {
        const double v = t.fval;
        next();
        return std::make_unique<LiteralExpr>(p, Value::number(v));
      }
      case TokenType::kOperator:
        if (skip_op("(")) {
          ExprPtr e = parse_tuple(false, true, {}, true);
          expect_op(")");
          return e;
        }
        if (is_op("[")) return parse_list();
        if (is_op("{")) return parse_dict();
        break;
      default: break;
    }
    error("unexpected " + describe(t) + " in an expression");
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, const std::vector<std::string>& extra_end,
                      bool explicit_parens) {
    const Pos p = cur().pos;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) error("expected an expression, got " + describe(cur()));
    }
    auto t = std::make_unique<ListExpr>(p, true);
    t->items = std::move(items);
    return t;
  }

  ExprPtr parse_list() {
    auto l = std::make_unique<ListExpr>(cur().pos, false);
    expect_op("[");
    while (!is_op("]")) {
      if (!l->items.empty()) expect_op(",");
      if (is_op("]")) break;
      l->items.push_back(parse_expression(true));
    }
    expect_op("]");
    return l;
  }

  ExprPtr parse_dict() {
    auto d = std::make_unique<DictExpr>(cur().pos);
    expect_op("{");
    while (!is_op("}")) {
      if (!d->items.empty()) expect_op(",");
      if (is_op("}")) break;
      ExprPtr k = parse_expression(true);
      expect_op(":");
      ExprPtr v = parse_expression(true);
      d->items.emplace_back(std::move(k), std::move(v));
    }
    expect_op("}");
    return d;
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        e = parse_filters(std::move(e), false);
      } else if (is_name("is")) {
        e = parse_test(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr e) {
    const Pos p = cur().pos;
    if (skip_op(".")) {
      if (cur().type == TokenType::kName) return std::make_unique<GetattrExpr>(p, std::move(e), expect_name());
      if (cur().type == TokenType::kInt) {
        auto idx = std::make_unique<LiteralExpr>(cur().pos, Value::integer(cur().ival));
        next();
        return std::make_unique<GetitemExpr>(p, std::move(e), std::move(idx));
      }
      error("expected a name or a number after '.', got " + describe(cur()));
    }
    expect_op("[");
    ExprPtr result;
    if (is_op("]")) error("expected a subscript, got ']'");
    // [a], [a:b], [a:b:c] with any part left out.
    ExprPtr start;
    if (!is_op(":")) {
      start = parse_expression(true);
      if (!is_op(":")) {
        if (is_op(",")) error("tuple subscripts (x[a, b]) are not supported");
        expect_op("]");
        return std::make_unique<GetitemExpr>(p, std::move(e), std::move(start));
      }
    }
    auto s = std::make_unique<SliceExpr>(p, std::move(e));
    s->start = std::move(start);
    expect_op(":");
    if (!is_op(":") && !is_op("]")) s->stop = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]")) s->step = parse_expression(true);
    }
    expect_op("]");
    return s;
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto c = std::make_unique<CallExpr>(cur().pos, std::move(callee));
    c->args = parse_call_args();
    return c;
  }

  Args parse_call_args() {
    Args a;
    expect_op("(");
    bool need_comma = false;
    while (!is_op(")")) {
      if (need_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) error("*args / **kwargs in a call are not supported");
      if (cur().type == TokenType::kName && peek().type == TokenType::kOperator && peek().text == "=") {
        std::string key = expect_name();
        next();
        a.keyword.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!a.keyword.empty()) error("positional argument after a keyword argument");
        a.positional.push_back(parse_expression(true));
      }
      need_comma = true;
    }
    expect_op(")");
    return a;
  }

  // One or more `| name(args)`; `start_inline` when the first filter has no leading pipe
  // ({% filter upper %}).
  ExprPtr parse_filters(ExprPtr operand, bool start_inline) {
    bool first = start_inline;
    while (first || is_op("|")) {
      if (!first) next();
      first = false;
      const Pos p = cur().pos;
      std::string name = expect_name();
      while (skip_op(".")) name += "." + expect_name();
      if (!is_filter(name)) fail(p, "unknown filter '" + name + "'");
      auto f = std::make_unique<FilterExpr>(p, std::move(operand), name);
      if (is_op("(")) f->args = parse_call_args();
      operand = std::move(f);
    }
    return operand;
  }

  ExprPtr parse_test(ExprPtr operand) {
    const Pos p = cur().pos;
    next();  // is
    const bool negated = skip_name("not");
    const Pos name_pos = cur().pos;
    std::string name = expect_name();
    while (skip_op(".")) name += "." + expect_name();
    if (!is_test(name)) fail(name_pos, "unknown test '" + name + "'");
    auto t = std::make_unique<TestExpr>(p, std::move(operand), name, negated);
    if (is_op("(")) {
      t->args = parse_call_args();
    } else {
      // `x is divisibleby 3`, `x is sameas false`: one argument without parentheses.
      const TokenType ty = cur().type;
      const bool arg_start = ty == TokenType::kName || ty == TokenType::kString || ty == TokenType::kInt ||
                             ty == TokenType::kFloat || is_op("[") || is_op("{");
      if (arg_start && !is_name("else") && !is_name("or") && !is_name("and")) {
        if (is_name("is")) error("tests cannot be chained with 'is'");
        t->args.positional.push_back(parse_postfix(parse_primary()));
      }
    }
    return t;
  }

  const std::vector<Token>& toks_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body parse(const std::vector<Token>& tokens) { return Parser(tokens).parse_template(); }

}  // namespace pipellm::jinja

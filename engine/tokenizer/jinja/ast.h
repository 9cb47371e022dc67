// The parsed template: expressions and statements, each with the position of its first token so
// a runtime error can name the line and column. The interpreter switches on `kind` and
// static_casts to the concrete node; each kind has exactly one node type.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/jinja/error.h"
#include "engine/tokenizer/jinja/value.h"

namespace pipellm::jinja {

// ---- expressions ----

enum class ExprKind {
  kLiteral,
  kName,
  kList,     // [a, b] or a tuple (a, b)
  kDict,     // {k: v}
  kGetattr,  // x.name
  kGetitem,  // x[i]
  kSlice,    // x[a:b:c]
  kCall,     // f(args)
  kFilter,   // x | f(args)
  kTest,     // x is [not] t(args)
  kUnary,    // not x, -x, +x
  kBinary,   // arithmetic, and, or
  kConcat,   // a ~ b ~ c
  kCompare,  // a < b == c, in, not in
  kCond,     // a if c else b
};

struct Expr {
  Expr(ExprKind k, Pos p) : kind(k), pos(p) {}
  virtual ~Expr() = default;
  ExprKind kind;
  Pos pos;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Args {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct LiteralExpr : Expr {
  LiteralExpr(Pos p, Value v) : Expr(ExprKind::kLiteral, p), value(std::move(v)) {}
  Value value;
};

struct NameExpr : Expr {
  NameExpr(Pos p, std::string n) : Expr(ExprKind::kName, p), name(std::move(n)) {}
  std::string name;
};

struct ListExpr : Expr {
  ListExpr(Pos p, bool t) : Expr(ExprKind::kList, p), tuple(t) {}
  std::vector<ExprPtr> items;
  bool tuple;
};

struct DictExpr : Expr {
  explicit DictExpr(Pos p) : Expr(ExprKind::kDict, p) {}
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};

struct GetattrExpr : Expr {
  GetattrExpr(Pos p, ExprPtr o, std::string a) : Expr(ExprKind::kGetattr, p), object(std::move(o)), attr(std::move(a)) {}
  ExprPtr object;
  std::string attr;
};

struct GetitemExpr : Expr {
  GetitemExpr(Pos p, ExprPtr o, ExprPtr i) : Expr(ExprKind::kGetitem, p), object(std::move(o)), index(std::move(i)) {}
  ExprPtr object, index;
};

struct SliceExpr : Expr {
  SliceExpr(Pos p, ExprPtr o) : Expr(ExprKind::kSlice, p), object(std::move(o)) {}
  ExprPtr object, start, stop, step;  // a missing part is null (Python's None)
};

struct CallExpr : Expr {
  CallExpr(Pos p, ExprPtr c) : Expr(ExprKind::kCall, p), callee(std::move(c)) {}
  ExprPtr callee;
  Args args;
};

// In {% filter %} blocks and {% set x | f %} the innermost operand is null: the block's text.
struct FilterExpr : Expr {
  FilterExpr(Pos p, ExprPtr o, std::string n) : Expr(ExprKind::kFilter, p), operand(std::move(o)), name(std::move(n)) {}
  ExprPtr operand;
  std::string name;
  Args args;
};

struct TestExpr : Expr {
  TestExpr(Pos p, ExprPtr o, std::string n, bool neg)
      : Expr(ExprKind::kTest, p), operand(std::move(o)), name(std::move(n)), negated(neg) {}
  ExprPtr operand;
  std::string name;
  Args args;
  bool negated;
};

enum class UnaryOp { kNot, kNeg, kPos };
struct UnaryExpr : Expr {
  UnaryExpr(Pos p, UnaryOp o, ExprPtr e) : Expr(ExprKind::kUnary, p), op(o), operand(std::move(e)) {}
  UnaryOp op;
  ExprPtr operand;
};

enum class BinaryOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kAnd, kOr };
struct BinaryExpr : Expr {
  BinaryExpr(Pos p, BinaryOp o, ExprPtr l, ExprPtr r)
      : Expr(ExprKind::kBinary, p), op(o), left(std::move(l)), right(std::move(r)) {}
  BinaryOp op;
  ExprPtr left, right;
};

struct ConcatExpr : Expr {
  explicit ConcatExpr(Pos p) : Expr(ExprKind::kConcat, p) {}
  std::vector<ExprPtr> parts;
};

enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };
struct CompareExpr : Expr {
  CompareExpr(Pos p, ExprPtr f) : Expr(ExprKind::kCompare, p), first(std::move(f)) {}
  ExprPtr first;
  std::vector<std::pair<CompareOp, ExprPtr>> rest;
};

struct CondExpr : Expr {
  CondExpr(Pos p, ExprPtr c, ExprPtr t, ExprPtr o)
      : Expr(ExprKind::kCond, p), cond(std::move(c)), then(std::move(t)), otherwise(std::move(o)) {}
  ExprPtr cond, then, otherwise;  // otherwise null: undefined when the condition is false
};

// ---- statements ----

enum class NodeKind {
  kText,
  kOutput,      // {{ expr }}
  kIf,
  kFor,
  kSet,         // {% set target = expr %}
  kSetBlock,    // {% set target %}...{% endset %}
  kMacro,
  kCallBlock,   // {% call(params) macro(args) %}...{% endcall %}
  kFilterBlock, // {% filter f %}...{% endfilter %}
  kBreak,
  kContinue,
  kGeneration,  // HF's {% generation %}...{% endgeneration %}: renders its body
};

struct Node {
  Node(NodeKind k, Pos p) : kind(k), pos(p) {}
  virtual ~Node() = default;
  NodeKind kind;
  Pos pos;
};
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

// An assignment target: one name, names to unpack (a, b), or a namespace attribute (ns.attr).
struct Target {
  std::vector<std::string> names;
  bool unpack = false;
  std::string attr;  // non-empty: names[0].attr
};

struct Param {
  std::string name;
  ExprPtr default_value;  // may be null
};

struct TextNode : Node {
  TextNode(Pos p, std::string t) : Node(NodeKind::kText, p), text(std::move(t)) {}
  std::string text;
};

struct OutputNode : Node {
  OutputNode(Pos p, ExprPtr e) : Node(NodeKind::kOutput, p), expr(std::move(e)) {}
  ExprPtr expr;
};

struct IfNode : Node {
  explicit IfNode(Pos p) : Node(NodeKind::kIf, p) {}
  std::vector<std::pair<ExprPtr, Body>> branches;  // if, elif...
  Body otherwise;
};

struct ForNode : Node {
  explicit ForNode(Pos p) : Node(NodeKind::kFor, p) {}
  Target target;
  ExprPtr iter;
  ExprPtr filter;  // for x in y if cond (may be null)
  Body body, otherwise;
};

struct SetNode : Node {
  SetNode(Pos p, Target t, ExprPtr v) : Node(NodeKind::kSet, p), target(std::move(t)), value(std::move(v)) {}
  Target target;
  ExprPtr value;
};

struct SetBlockNode : Node {
  explicit SetBlockNode(Pos p) : Node(NodeKind::kSetBlock, p) {}
  Target target;
  ExprPtr filter;  // may be null
  Body body;
};

struct MacroNode : Node {
  explicit MacroNode(Pos p) : Node(NodeKind::kMacro, p) {}
  std::string name;
  std::vector<Param> params;
  Body body;
};

struct CallBlockNode : Node {
  explicit CallBlockNode(Pos p) : Node(NodeKind::kCallBlock, p) {}
  std::vector<Param> caller_params;
  ExprPtr call;  // a CallExpr
  Body body;
};

struct FilterBlockNode : Node {
  explicit FilterBlockNode(Pos p) : Node(NodeKind::kFilterBlock, p) {}
  ExprPtr filter;
  Body body;
};

struct GenerationNode : Node {
  explicit GenerationNode(Pos p) : Node(NodeKind::kGeneration, p) {}
  Body body;
};

struct SimpleNode : Node {  // break, continue
  SimpleNode(NodeKind k, Pos p) : Node(k, p) {}
};

}  // namespace pipellm::jinja

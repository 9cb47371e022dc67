#include "engine/tokenizer/jinja/operators.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/tokenizer/jinja/error.h"

namespace pipellm::jinja {

namespace {

const char* symbol(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd: return "+";
    case BinaryOp::kSub: return "-";
    case BinaryOp::kMul: return "*";
    case BinaryOp::kDiv: return "/";
    case BinaryOp::kFloorDiv: return "//";
    case BinaryOp::kMod: return "%";
    case BinaryOp::kPow: return "**";
    case BinaryOp::kAnd: return "and";
    case BinaryOp::kOr: return "or";
  }
  return "?";
}

[[noreturn]] void type_error(BinaryOp op, const Value& a, const Value& b) {
  if (a.is_undefined()) throw OpError(a.undefined_why());
  if (b.is_undefined()) throw OpError(b.undefined_why());
  throw OpError(std::string("unsupported operand type(s) for ") + symbol(op) + ": '" + a.type_name() + "' and '" +
                b.type_name() + "'");
}

[[noreturn]] void overflow() { throw OpError("integer overflow (beyond 64 bits)"); }

void check_size(size_t n, size_t max_size) {
  if (n > max_size) {
    throw OpError("result too large: " + std::to_string(n) + " (limit " + std::to_string(max_size) + ")");
  }
}

Value repeat(const Value& seq, int64_t times, size_t max_size) {
  if (times < 0) times = 0;
  if (seq.is_string()) {
    const std::string& s = seq.as_string();
    if (s.empty()) return seq;
    check_size(s.size() * static_cast<size_t>(std::min<int64_t>(times, INT32_MAX)), max_size);
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += s;
    return Value::string(std::move(out));
  }
  const auto& items = seq.items();
  if (items.empty()) return seq;
  check_size(items.size() * static_cast<size_t>(std::min<int64_t>(times, INT32_MAX)), max_size);
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return seq.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

int64_t floor_div(int64_t a, int64_t b) {
  if (a == INT64_MIN && b == -1) overflow();
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t int_pow(int64_t base, int64_t exp) {
  int64_t result = 1;
  while (exp > 0) {
    if (exp & 1) {
      if (__builtin_mul_overflow(result, base, &result)) overflow();
    }
    exp >>= 1;
    if (exp > 0 && __builtin_mul_overflow(base, base, &base)) overflow();
  }
  return result;
}

}  // namespace

Value binary_op(BinaryOp op, const Value& a, const Value& b, size_t max_size) {
  const bool numbers = a.is_number() && b.is_number();
  const bool ints = a.is_int() && b.is_int();
  switch (op) {
    case BinaryOp::kAdd:
      if (ints) {
        int64_t r;
        if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) overflow();
        return Value::integer(r);
      }
      if (numbers) return Value::number(a.as_float() + b.as_float());
      if (a.is_string() && b.is_string()) {
        check_size(a.as_string().size() + b.as_string().size(), max_size);
        return Value::string(a.as_string() + b.as_string());
      }
      if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple() && !a.is_generator() && !b.is_generator()) {
        check_size(a.items().size() + b.items().size(), max_size);
        std::vector<Value> items = a.items();
        items.insert(items.end(), b.items().begin(), b.items().end());
        return a.is_tuple() ? Value::tuple(std::move(items)) : Value::list(std::move(items));
      }
      type_error(op, a, b);
    case BinaryOp::kSub:
      if (ints) {
        int64_t r;
        if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) overflow();
        return Value::integer(r);
      }
      if (numbers) return Value::number(a.as_float() - b.as_float());
      type_error(op, a, b);
    case BinaryOp::kMul:
      if (ints) {
        int64_t r;
        if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) overflow();
        return Value::integer(r);
      }
      if (numbers) return Value::number(a.as_float() * b.as_float());
      if ((a.is_string() || (a.is_list() && !a.is_generator())) && b.is_int()) return repeat(a, b.as_int(), max_size);
      if (a.is_int() && (b.is_string() || (b.is_list() && !b.is_generator()))) return repeat(b, a.as_int(), max_size);
      type_error(op, a, b);
    case BinaryOp::kDiv:
      if (numbers) {
        if (b.as_float() == 0) throw OpError("division by zero");
        return Value::number(a.as_float() / b.as_float());
      }
      type_error(op, a, b);
    case BinaryOp::kFloorDiv:
      if (ints) {
        if (b.as_int() == 0) throw OpError("integer division by zero");
        return Value::integer(floor_div(a.as_int(), b.as_int()));
      }
      if (numbers) {
        if (b.as_float() == 0) throw OpError("float floor division by zero");
        return Value::number(std::floor(a.as_float() / b.as_float()));
      }
      type_error(op, a, b);
    case BinaryOp::kMod:
      if (ints) {
        if (b.as_int() == 0) throw OpError("integer modulo by zero");
        if (b.as_int() == -1) return Value::integer(0);
        const int64_t r = a.as_int() % b.as_int();
        return Value::integer(r != 0 && ((r < 0) != (b.as_int() < 0)) ? r + b.as_int() : r);
      }
      if (numbers) {
        if (b.as_float() == 0) throw OpError("float modulo by zero");
        double r = std::fmod(a.as_float(), b.as_float());
        if (r != 0 && ((r < 0) != (b.as_float() < 0))) r += b.as_float();
        return Value::number(r);
      }
      if (a.is_string()) throw OpError("printf-style string formatting ('...' % x) is not supported");
      type_error(op, a, b);
    case BinaryOp::kPow:
      if (ints && b.as_int() >= 0) return Value::integer(int_pow(a.as_int(), b.as_int()));
      if (numbers) return Value::number(std::pow(a.as_float(), b.as_float()));
      type_error(op, a, b);
    case BinaryOp::kAnd:
    case BinaryOp::kOr: break;
  }
  throw OpError(std::string("binary operator '") + symbol(op) + "' is not an arithmetic operator");
}

Value unary_op(UnaryOp op, const Value& v) {
  switch (op) {
    case UnaryOp::kNot: return Value::boolean(!v.truthy());
    case UnaryOp::kNeg:
      if (v.is_int()) {
        if (v.as_int() == INT64_MIN) overflow();
        return Value::integer(-v.as_int());
      }
      if (v.is_number()) return Value::number(-v.as_float());
      break;
    case UnaryOp::kPos:
      if (v.is_int()) return Value::integer(v.as_int());
      if (v.is_number()) return v;
      break;
  }
  if (v.is_undefined()) throw OpError(v.undefined_why());
  throw OpError(std::string("bad operand type for unary ") + (op == UnaryOp::kNeg ? "-" : "+") + ": '" +
                v.type_name() + "'");
}

bool compare(CompareOp op, const Value& a, const Value& b) {
  switch (op) {
    case CompareOp::kEq: return equals(a, b);
    case CompareOp::kNe: return !equals(a, b);
    case CompareOp::kLt: return less(a, b);
    case CompareOp::kLe: return less(a, b) || equals(a, b);
    case CompareOp::kGt: return less(b, a);
    case CompareOp::kGe: return less(b, a) || equals(a, b);
    case CompareOp::kIn: return contains(b, a);
    case CompareOp::kNotIn: return !contains(b, a);
  }
  throw OpError("unknown comparison operator");
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kString:
      if (!item.is_string()) {
        throw OpError(std::string("'in <string>' requires string as left operand, not ") + item.type_name());
      }
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.items()) {
        if (equals(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (container.is_namespace()) break;
      if ((item.is_list() && !item.is_tuple()) || item.is_dict()) {
        throw OpError(std::string("unhashable type: '") + item.type_name() + "'");
      }
      return item.is_string() && container.find(item.as_string()) != nullptr;
    case Value::Kind::kUndefined: return false;  // Jinja's Undefined iterates as empty
    default: break;
  }
  throw OpError(std::string("argument of type '") + container.type_name() + "' is not iterable");
}

}  // namespace pipellm::jinja

// Python's arithmetic, comparison and membership operators on template values. Errors are
// OpErrors in Python's words ("unsupported operand type(s) for +: 'str' and 'int'"); using an
// Undefined in arithmetic says which value was undefined. Results that would exceed `max_size`
// (string bytes, list items: "x" * 10**9) are refused before they are built.
#pragma once
#include <cstddef>

#include "engine/tokenizer/jinja/ast.h"
#include "engine/tokenizer/jinja/value.h"

namespace pipellm::jinja {

Value binary_op(BinaryOp op, const Value& a, const Value& b, size_t max_size);  // not kAnd / kOr
Value unary_op(UnaryOp op, const Value& v);
bool compare(CompareOp op, const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);  // Python's `item in container`

}  // namespace pipellm::jinja

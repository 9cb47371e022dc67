// Errors of the Jinja engine. A template error (syntax, an unsupported construct, a failing
// operation, a limit) is a FormatError naming the template's line and column: the template came
// from a model file. raise_exception() in a template is an InvalidArgument carrying its message:
// the template refused the caller's conversation.
#pragma once
#include <stdexcept>
#include <string>

#include "base/error.h"

namespace pipellm::jinja {

// 1-based line and column (in bytes) of a token in the template source.
struct Pos {
  int line = 0;
  int col = 0;
};

// An operation failed on its values (a type error, an undefined value used): thrown without a
// position by the value operations and builtins; the interpreter rethrows it as fail(pos, ...)
// with the position of the expression that failed.
class OpError : public std::runtime_error {
 public:
  explicit OpError(const std::string& what) : std::runtime_error(what) {}
};

[[noreturn]] inline void fail(Pos pos, const std::string& msg) {
  throw FormatError("jinja template, line " + std::to_string(pos.line) + " column " + std::to_string(pos.col) + ": " +
                    msg);
}

}  // namespace pipellm::jinja

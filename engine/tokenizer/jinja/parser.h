// Tokens -> statements and expressions, with Jinja's grammar and operator precedence (Python's,
// except that filters bind tighter than arithmetic and ** is left-associative). Unknown filters
// and tests are reported here, as Jinja reports them when it compiles a template; tags outside
// the supported subset (include, import, extends, block, with, ...) are FormatErrors naming them.
#pragma once
#include <vector>

#include "engine/tokenizer/jinja/ast.h"
#include "engine/tokenizer/jinja/lexer.h"

namespace pipellm::jinja {

// Deeper nesting of expressions or blocks than this is refused (bounds the parser's and the
// interpreter's recursion on hostile templates).
constexpr int kMaxNesting = 100;

Body parse(const std::vector<Token>& tokens);

}  // namespace pipellm::jinja

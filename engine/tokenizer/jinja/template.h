// A parsed Jinja template, rendered with the settings Hugging Face uses for chat templates
// (trim_blocks, lstrip_blocks, its tojson, raise_exception and strftime_now globals, loop
// controls, the {% generation %} tag). Parse once, render many times; rendering is const and
// keeps no state between calls.
#pragma once
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/jinja/ast.h"
#include "engine/tokenizer/jinja/interpreter.h"
#include "engine/tokenizer/jinja/lexer.h"

namespace pipellm::jinja {

struct RenderOptions {
  Limits limits;
  // strftime_now's clock; unset: the local time when render() starts.
  std::optional<std::tm> now;
};

class Template {
 public:
  // FormatError naming line and column on a syntax error or an unsupported construct.
  explicit Template(const std::string& source, const LexOptions& lex = {});

  // `variables` shadow the builtins (range, namespace, dict, raise_exception, strftime_now).
  // FormatError when the template fails (a type error, an undefined value used, a limit),
  // InvalidArgument when it calls raise_exception.
  std::string render(const std::vector<std::pair<std::string, Value>>& variables, const RenderOptions& options = {}) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace pipellm::jinja

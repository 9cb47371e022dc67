#include "engine/tokenizer/jinja/template.h"

#include "engine/tokenizer/jinja/builtins.h"
#include "engine/tokenizer/jinja/parser.h"

namespace pipellm::jinja {

Template::Template(const std::string& source, const LexOptions& lex)
    : body_(std::make_shared<const Body>(parse(tokenize(source, lex)))) {}

std::string Template::render(const std::vector<std::pair<std::string, Value>>& variables,
                             const RenderOptions& options) const {
  auto globals = std::make_shared<Scope>(nullptr);
  for (auto& [name, v] : builtin_globals()) globals->set(name, std::move(v));
  for (const auto& [name, v] : variables) globals->set(name, v);
  std::tm now{};
  if (options.now) {
    now = *options.now;
  } else {
    const std::time_t t = std::time(nullptr);
    localtime_r(&t, &now);
  }
  Interpreter in(options.limits, now);
  return in.render(*body_, globals);
}

}  // namespace pipellm::jinja

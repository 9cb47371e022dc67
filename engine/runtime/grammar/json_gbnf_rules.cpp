#include "engine/runtime/grammar/json_gbnf_rules.h"

namespace pipellm::grammar {

namespace {
const std::vector<JsonRule>& rules() {
  static const std::vector<JsonRule> r = {
      // Bounded: at most one newline and 20 indentation characters between tokens.
      {"space", R"(| " " | "\n" [ \t]{0,20})", {}},
      {"boolean", R"(("true" | "false") space)", {"space"}},
      {"decimal-part", R"([0-9]{1,16})", {}},
      {"integral-part", R"([0] | [1-9] [0-9]{0,15})", {}},
      // llama.cpp allows a 16-digit exponent; two digits keep every number within a double's
      // range (16 digits times 1e99), which parsers such as nlohmann reject beyond.
      {"number", R"(("-"? integral-part) ("." decimal-part)? ([eE] [-+]? [0-9]{1,2})? space)",
       {"integral-part", "decimal-part", "space"}},
      {"integer", R"(("-"? integral-part) space)", {"integral-part", "space"}},
      {"value", R"(object | array | string | number | boolean | null)",
       {"object", "array", "string", "number", "boolean", "null"}},
      {"object", R"("{" space ( string ":" space value ("," space string ":" space value)* )? "}" space)",
       {"string", "value", "space"}},
      {"array", R"("[" space ( value ("," space value)* )? "]" space)", {"value", "space"}},
      {"uuid",
       R"("\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"" space)",
       {"space"}},
      // A string character: anything but '"', '\\' and control characters, or an escape. Unlike
      // llama.cpp, \u escapes of UTF-16 surrogates (D800-DFFF) are left out: a lone one is
      // invalid and parsers reject it (characters past U+FFFF can still come as raw UTF-8).
      {"char", R"([^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" hex4))", {"hex4"}},
      {"hex4", R"(([0-9a-cA-Ce-fE-F] [0-9a-fA-F] | [dD] [0-7]) [0-9a-fA-F]{2})", {}},
      {"string", R"("\"" char* "\"" space)", {"char", "space"}},
      {"null", R"("null" space)", {"space"}},
      {"date", R"([0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] ))", {}},
      {"time",
       R"(([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ))",
       {}},
      {"date-time", R"(date "T" time)", {"date", "time"}},
      {"date-string", R"("\"" date "\"" space)", {"date", "space"}},
      {"time-string", R"("\"" time "\"" space)", {"time", "space"}},
      {"date-time-string", R"("\"" date-time "\"" space)", {"date-time", "space"}},
  };
  return r;
}
}  // namespace

const JsonRule* json_rule(const std::string& name) {
  for (const JsonRule& r : rules()) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

std::string any_json_gbnf() {
  std::string out = "root ::= value\n";
  for (const char* n : {"value", "object", "array", "string", "char", "hex4", "number", "integral-part", "decimal-part", "boolean",
                        "null", "space"}) {
    out += std::string(n) + " ::= " + json_rule(n)->body + "\n";
  }
  return out;
}

}  // namespace pipellm::grammar

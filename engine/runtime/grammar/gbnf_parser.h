// GBNF (llama.cpp's grammar format, grammars/README.md) to the flat Grammar the matcher walks.
//
//   root  ::= "{" ws pair ("," ws pair)* "}"   # rules: name ::= alternatives
//   pair  ::= [a-z]+ ":" ws ( num | "null" )   # sequences, groups, alternatives
//   num   ::= "-"? [0-9]{1,6}                  # * + ? {m} {m,} {m,n} {,n}
//   ws    ::= [ \t\n]{0,4}                     # [..] [^..] . "\x41\u00e9\U0001F600\t\n\r\\\"\[\]"
//
// Names are letters, digits and '-'. Newlines end a rule except inside parentheses or right after
// '|'. Groups and repetitions become generated rules named "<rule>_<n>" (as llama.cpp names them).
// Not supported: token references (<[id]>, <|name|>), which newer llama.cpp has.
#pragma once
#include <string>
#include <string_view>

#include "engine/runtime/grammar/grammar.h"

namespace pipellm::grammar {

// Throws FormatError "grammar: line L, column C: <what is wrong>" for a syntax error, a rule used
// but never defined, a rule defined twice, or an absurd repetition count; "grammar: ..." naming
// the rules for a missing start rule or left recursion (grammar_checks.h).
Grammar parse_gbnf(std::string_view text, const std::string& root = "root");

}  // namespace pipellm::grammar

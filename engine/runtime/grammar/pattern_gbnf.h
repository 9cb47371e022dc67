// A JSON schema "pattern" (ECMA-262 regular expression, the common subset) as a GBNF expression
// for the JSON text between a string's quotes. Characters JSON must escape ('"', '\\', control
// characters) are matched as their escapes, so the output stays valid JSON and its decoded value
// matches the pattern.
//
// Supported: literals, '.', classes [a-z] [^...] with escapes, \d \w \s \D \W \S, \t \n \r \f
// \v \0 \xHH \uHHHH, escaped punctuation, groups ( ) (?: ) (?<name> ), '|', quantifiers * + ?
// {m} {m,} {m,n} (a trailing lazy '?' is ignored), '^' at the start and '$' at the end. Without
// them the pattern may match anywhere (schema semantics), so the string may have anything around.
#pragma once
#include <string>

namespace pipellm::grammar {

// Throws InvalidArgument naming the pattern, the position and the construct it cannot take
// (lookarounds, backreferences, word boundaries, anchors elsewhere).
std::string pattern_gbnf(const std::string& pattern);

}  // namespace pipellm::grammar

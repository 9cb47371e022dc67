// Whole-grammar checks the matcher relies on: a left-recursive rule (one that can reach itself
// without consuming a character, e.g. expr ::= expr "+" term, or a repetition of something
// that can be empty) would make expanding the pushdown stacks loop forever.
#pragma once
#include <vector>

#include "engine/runtime/grammar/grammar.h"

namespace pipellm::grammar {

// Per rule: whether it can match the empty string.
std::vector<bool> nullable_rules(const Grammar& g);

// Throws FormatError "grammar: left recursion: a -> b -> a ..." naming the cycle.
void check_left_recursion(const Grammar& g);

}  // namespace pipellm::grammar

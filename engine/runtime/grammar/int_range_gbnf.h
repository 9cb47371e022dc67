// A GBNF expression for the JSON integers in [lo, hi]: decimal, no leading zeros, '-' only on
// negative numbers. Built digit by digit (as regex range generators do): split by length, then
// by the first digit, so the grammar rejects an out-of-range number at its first wrong digit
// instead of after the fact.
#pragma once
#include <cstdint>
#include <string>

namespace pipellm::grammar {

// Integers are limited to 16 digits, as JSON numbers are in the schema grammar: an open end is
// +-(10^16 - 1). Throws InvalidArgument when lo > hi.
constexpr int64_t kMaxJsonInteger = 9999999999999999LL;
std::string int_range_gbnf(int64_t lo, int64_t hi);

}  // namespace pipellm::grammar

#include "engine/runtime/grammar/int_range_gbnf.h"

#include <algorithm>
#include <vector>

#include "base/error.h"
#include "engine/runtime/grammar/gbnf_text.h"

namespace pipellm::grammar {
namespace {

std::string digit_class(char a, char b) {
  return a == b ? "\"" + std::string(1, a) + "\"" : "[" + std::string(1, a) + "-" + std::string(1, b) + "]";
}

std::string any_digits(size_t n) {
  if (n == 0) return "";
  return n == 1 ? "[0-9]" : "[0-9]{" + std::to_string(n) + "}";
}

std::string seq(const std::string& a, const std::string& b) { return b.empty() ? a : a + " " + b; }
std::string group(const std::vector<std::string>& alts) {
  return alts.size() == 1 ? alts[0] : "(" + gbnf_join(alts, " | ") + ")";
}

// Digit strings of one length between a and b (a <= b, same length).
std::vector<std::string> same_length(const std::string& a, const std::string& b) {
  const size_t n = a.size();
  if (n == 0) return {""};
  if (n == 1) return {digit_class(a[0], b[0])};
  const std::string ra = a.substr(1), rb = b.substr(1);
  if (a[0] == b[0]) return {seq(digit_class(a[0], a[0]), group(same_length(ra, rb)))};
  std::vector<std::string> alts;
  char low = a[0], high = b[0];
  if (ra != std::string(n - 1, '0')) {
    alts.push_back(seq(digit_class(a[0], a[0]), group(same_length(ra, std::string(n - 1, '9')))));
    ++low;
  }
  std::string last;
  if (rb != std::string(n - 1, '9')) {
    last = seq(digit_class(b[0], b[0]), group(same_length(std::string(n - 1, '0'), rb)));
    --high;
  }
  if (low <= high) alts.push_back(seq(digit_class(low, high), any_digits(n - 1)));
  if (!last.empty()) alts.push_back(last);
  return alts;
}

// Non-negative integers in [a, b], split by number of digits.
std::vector<std::string> non_negative(int64_t a, int64_t b) {
  std::vector<std::string> alts;
  int64_t low_of_len = 0, high_of_len = 9;
  for (int len = 1; len <= 16 && low_of_len <= b; ++len) {
    const int64_t lo = std::max(a, low_of_len), hi = std::min(b, high_of_len);
    if (lo <= hi) {
      for (auto& s : same_length(std::to_string(lo), std::to_string(hi))) alts.push_back(std::move(s));
    }
    low_of_len = high_of_len + 1;
    high_of_len = high_of_len * 10 + 9;
  }
  return alts;
}

}  // namespace

std::string int_range_gbnf(int64_t lo, int64_t hi) {
  lo = std::max(lo, -kMaxJsonInteger);
  hi = std::min(hi, kMaxJsonInteger);
  if (lo > hi) throw InvalidArgument("json schema: no integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  std::vector<std::string> alts;
  if (lo < 0) alts.push_back("\"-\" " + group(non_negative(std::max<int64_t>(1, -hi), -lo)));
  if (hi >= 0) {
    for (auto& s : non_negative(std::max<int64_t>(0, lo), hi)) alts.push_back(std::move(s));
  }
  return group(alts);
}

}  // namespace pipellm::grammar

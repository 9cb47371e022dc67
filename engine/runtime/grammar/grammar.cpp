#include "engine/runtime/grammar/grammar.h"

#include <algorithm>
#include <utility>

namespace pipellm::grammar {

int32_t Grammar::find(const std::string& name) const {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<int32_t>(i);
  }
  return -1;
}

namespace {

// The set's members as inclusive ranges; `after` gets the element past the set.
std::vector<std::pair<uint32_t, uint32_t>> set_ranges(const Element* pos, const Element** after) {
  std::vector<std::pair<uint32_t, uint32_t>> r;
  do {
    if (pos[1].type == ElementType::CharRangeUpper) {
      r.emplace_back(pos->value, pos[1].value);
      pos += 2;
    } else {
      r.emplace_back(pos->value, pos->value);
      pos += 1;
    }
  } while (pos->type == ElementType::CharAlt);
  *after = pos;
  return r;
}

}  // namespace

bool match_char(const Element* pos, uint32_t cp, const Element** after) {
  if (pos->type == ElementType::CharAny) {
    *after = pos + 1;
    return true;
  }
  const bool positive = pos->type == ElementType::Char;
  bool found = false;
  do {
    if (pos[1].type == ElementType::CharRangeUpper) {
      found = found || (pos->value <= cp && cp <= pos[1].value);
      pos += 2;
    } else {
      found = found || pos->value == cp;
      pos += 1;
    }
  } while (pos->type == ElementType::CharAlt);
  *after = pos;
  return found == positive;
}

bool match_range(const Element* pos, uint32_t lo, uint32_t hi) {
  if (pos->type == ElementType::CharAny) return true;
  const Element* after = nullptr;
  auto ranges = set_ranges(pos, &after);
  if (pos->type == ElementType::Char) {
    for (const auto& [a, b] : ranges) {
      if (a <= hi && lo <= b) return true;
    }
    return false;
  }
  // Negated: some code point of [lo, hi] escapes every excluded range.
  std::sort(ranges.begin(), ranges.end());
  uint64_t next = lo;  // the lowest code point not yet known to be excluded
  for (const auto& [a, b] : ranges) {
    if (a > next) break;
    next = std::max<uint64_t>(next, static_cast<uint64_t>(b) + 1);
    if (next > hi) return false;
  }
  return next <= hi;
}

bool match_all(const Element* pos, uint32_t lo, uint32_t hi) {
  if (pos->type == ElementType::CharAny) return true;
  const Element* after = nullptr;
  auto ranges = set_ranges(pos, &after);
  if (pos->type == ElementType::CharNot) {
    for (const auto& [a, b] : ranges) {
      if (a <= hi && lo <= b) return false;
    }
    return true;
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t next = lo;  // the lowest code point not yet known to be covered
  for (const auto& [a, b] : ranges) {
    if (a > next) break;
    next = std::max<uint64_t>(next, static_cast<uint64_t>(b) + 1);
    if (next > hi) return true;
  }
  return next > hi;
}

}  // namespace pipellm::grammar

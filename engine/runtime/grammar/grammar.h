// A parsed GBNF grammar in the flat form the matcher walks (the same shape llama.cpp uses, so
// its semantics carry over): each rule is one element array holding its alternatives, separated
// by Alt and closed by End. A character set is one Char (or CharNot) element followed by
// CharRangeUpper (closing a range with the element before it) and CharAlt (another member)
// elements. Repetitions and groups were rewritten into generated rules by the parser, so the
// matcher only ever sees characters, rule references and alternatives.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pipellm::grammar {

enum class ElementType : uint8_t {
  End,             // end of the rule (after its last alternative)
  Alt,             // start of the next alternative
  RuleRef,         // value: rule index
  Char,            // value: code point; starts a positive set
  CharNot,         // value: code point; starts a negated set
  CharRangeUpper,  // value: inclusive upper bound of a range started by the element before
  CharAlt,         // value: one more code point (or range start) of the current set
  CharAny,         // '.', any code point
};

struct Element {
  ElementType type;
  uint32_t value;
};

struct Grammar {
  std::vector<std::vector<Element>> rules;
  std::vector<std::string> names;  // per rule; generated rules are "<parent>_<n>"
  uint32_t root = 0;

  // Index of the rule named `name`, or -1.
  int32_t find(const std::string& name) const;
};

inline bool is_end_of_alternative(const Element* e) {
  return e->type == ElementType::End || e->type == ElementType::Alt;
}
inline bool starts_char_set(const Element* e) {
  return e->type == ElementType::Char || e->type == ElementType::CharNot || e->type == ElementType::CharAny;
}

// Whether the character set starting at `pos` admits code point `cp`; `after` gets the element
// past the set.
bool match_char(const Element* pos, uint32_t cp, const Element** after);
// Whether the set starting at `pos` admits some code point in [lo, hi] (for a partial UTF-8
// character, whose code point is known to lie in such a range).
bool match_range(const Element* pos, uint32_t lo, uint32_t hi);
// Whether the set starting at `pos` admits every code point in [lo, hi].
bool match_all(const Element* pos, uint32_t lo, uint32_t hi);

}  // namespace pipellm::grammar

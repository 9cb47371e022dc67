#include "engine/runtime/grammar/grammar_checks.h"

#include <functional>
#include <string>

#include "base/error.h"

namespace pipellm::grammar {

std::vector<bool> nullable_rules(const Grammar& g) {
  std::vector<bool> nullable(g.rules.size(), false);
  // Fixpoint: a rule is nullable once one alternative holds only nullable rule references.
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < g.rules.size(); ++r) {
      if (nullable[r]) continue;
      bool alt_ok = true;
      for (const Element& e : g.rules[r]) {
        if (e.type == ElementType::Alt || e.type == ElementType::End) {
          if (alt_ok) {
            nullable[r] = true;
            changed = true;
            break;
          }
          alt_ok = true;
        } else if (e.type != ElementType::RuleRef || !nullable[e.value]) {
          alt_ok = false;
        }
      }
    }
  }
  return nullable;
}

void check_left_recursion(const Grammar& g) {
  const std::vector<bool> nullable = nullable_rules(g);
  // Edges r -> s where s can be the first thing r matches: a reference preceded in its
  // alternative only by nullable references.
  std::vector<std::vector<uint32_t>> first(g.rules.size());
  for (size_t r = 0; r < g.rules.size(); ++r) {
    bool leading = true;
    for (const Element& e : g.rules[r]) {
      if (e.type == ElementType::Alt || e.type == ElementType::End) {
        leading = true;
      } else if (leading && e.type == ElementType::RuleRef) {
        first[r].push_back(e.value);
        leading = nullable[e.value];
      } else {
        leading = false;
      }
    }
  }
  enum : uint8_t { kNew, kOnPath, kDone };
  std::vector<uint8_t> mark(g.rules.size(), kNew);
  std::vector<uint32_t> path;
  std::function<void(uint32_t)> visit = [&](uint32_t r) {
    mark[r] = kOnPath;
    path.push_back(r);
    for (uint32_t s : first[r]) {
      if (mark[s] == kOnPath) {
        std::string cycle;
        bool in = false;
        for (uint32_t p : path) {
          in = in || p == s;
          if (in) cycle += g.names[p] + " -> ";
        }
        cycle += g.names[s];
        throw FormatError("grammar: left recursion: rule '" + g.names[s] +
                          "' can reach itself without matching a character (" + cycle +
                          "); rules named <rule>_<n> are groups and repetitions inside <rule>, and a repetition "
                          "of something that can be empty recurses this way too");
      }
      if (mark[s] == kNew) visit(s);
    }
    path.pop_back();
    mark[r] = kDone;
  };
  for (uint32_t r = 0; r < g.rules.size(); ++r) {
    if (mark[r] == kNew) visit(r);
  }
}

}  // namespace pipellm::grammar

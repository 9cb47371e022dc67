#include "coordinator/strict_config.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>
#include <sstream>

namespace pipellm::coord {

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

// A key compared the forgiving way, only to suggest the right spelling.
std::string folded(std::string s) {
  for (char& c : s) c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Reads one TOML scalar at `s[i]` (a quoted string, a number or a boolean); advances `i`.
// Returns "" when it is one, else what is wrong.
std::string scalar(const std::string& s, size_t& i) {
  const char c = s[i];
  if (c == '"' || c == '\'') {
    for (size_t j = i + 1; j < s.size(); ++j) {
      if (c == '"' && s[j] == '\\') {
        ++j;  // an escaped character
        continue;
      }
      if (s[j] == c) {
        i = j + 1;
        return "";
      }
    }
    return std::string("the string opened with ") + c + " is not closed on this line";
  }
  size_t j = i;
  while (j < s.size() && std::strchr(" \t,]#", s[j]) == nullptr) ++j;
  const std::string word = s.substr(i, j - i);
  if (word.empty()) return "expected a value";
  if (word == "true" || word == "false") {
    i = j;
    return "";
  }
  // Integers and floats as TOML writes them (1_000, -5, 0.5, 1e3): checked for shape only; the
  // option's own conversion and range check judge the number.
  const bool numeric = (std::isdigit(static_cast<unsigned char>(word[0])) ||
                        ((word[0] == '+' || word[0] == '-') && word.size() > 1 && std::isdigit(static_cast<unsigned char>(word[1])))) &&
                       word.find_first_not_of("0123456789+-._eE") == std::string::npos;
  if (!numeric) return "'" + word + "' is not a TOML value (strings need quotes: \"...\")";
  i = j;
  return "";
}

// Edits (insert, delete, replace) between two short strings: how near a typo is.
size_t distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// What is wrong with the text after `=`, or "".
std::string value_problem(const std::string& v) {
  size_t i = 0;
  const auto skip = [&] {
    while (i < v.size() && (v[i] == ' ' || v[i] == '\t')) ++i;
  };
  skip();
  if (i >= v.size()) return "no value";
  if (v[i] == '[') {  // a one-line array of scalars
    ++i;
    skip();
    bool first = true;
    while (i < v.size() && v[i] != ']') {
      if (!first) {
        if (v[i] != ',') return "array items must be separated by ','";
        ++i;
        skip();
        if (i < v.size() && v[i] == ']') break;  // a trailing comma
      }
      if (i >= v.size()) break;
      if (auto why = scalar(v, i); !why.empty()) return why;
      skip();
      first = false;
    }
    if (i >= v.size()) return "the array opened with [ is not closed on this line";
    ++i;
  } else if (auto why = scalar(v, i); !why.empty()) {
    return why;
  }
  skip();
  if (i < v.size() && v[i] != '#') return "unexpected text after the value: '" + v.substr(i) + "'";
  return "";
}

[[noreturn]] void fail(const std::string& source, int line, const std::string& what) {
  throw CLI::ConversionError(source + ":" + std::to_string(line) + ": " + what);
}

}  // namespace

void check_server_config(const std::string& text, const std::vector<std::string>& keys, const std::string& source) {
  std::istringstream in(text);
  std::string raw;
  std::set<std::string> seen;
  int line = 0;
  while (std::getline(in, raw)) {
    ++line;
    const std::string l = trim(raw);
    if (l.empty() || l[0] == '#' || l[0] == ';') continue;
    if (l[0] == '[') fail(source, line, "sections ('" + l + "') are not used: write every setting at the top level");
    const size_t eq = l.find('=');
    if (eq == std::string::npos) fail(source, line, "expected 'key = value', got '" + l + "'");
    std::string key = trim(l.substr(0, eq));
    if (key.size() >= 2 && (key.front() == '"' || key.front() == '\'') && key.back() == key.front()) {
      key = key.substr(1, key.size() - 2);
    }
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      std::string hint;
      size_t best = 3;  // suggest only near misses: at most two edits, '_' for '-' and case free
      for (const auto& k : keys) {
        const size_t d = distance(folded(k), folded(key));
        if (d < best) {
          best = d;
          hint = k;
        }
      }
      fail(source, line,
           "unknown setting '" + key + "'" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
               "; settings are the long flag names, as in `pipellm-coordinator --help`");
    }
    if (!seen.insert(key).second) fail(source, line, "'" + key + "' is set twice");
    if (auto why = value_problem(l.substr(eq + 1)); !why.empty()) fail(source, line, key + ": " + why);
  }
}

std::vector<CLI::ConfigItem> StrictConfig::from_config(std::istream& input) const {
  std::stringstream text;
  text << input.rdbuf();
  std::vector<std::string> keys;
  for (const CLI::Option* o : app_->get_options()) {
    for (const auto& n : o->get_lnames()) keys.push_back(n);
  }
  std::string source = "--server-config";
  if (const CLI::Option* c = app_->get_config_ptr(); c != nullptr && !c->results().empty()) source = c->results().back();
  check_server_config(text.str(), keys, source);
  std::istringstream again(text.str());
  return CLI::ConfigTOML::from_config(again);
}

}  // namespace pipellm::coord

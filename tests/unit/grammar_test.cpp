// Structured output: the GBNF parser (each construct, each error), the matcher against
// hand-written strings and partial UTF-8, the trie mask against token-by-token checks on the
// llama3 vocabulary (and its time per step), JSON schema -> GBNF checked by random walks whose
// outputs must parse (nlohmann) and validate (a small validator below), and generation with
// the fixture models under schema grammars.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <regex>

#include "base/error.h"
#include "engine/cpu/cpu_model.h"
#include "engine/gguf/gguf_file.h"
#include "engine/runtime/generator.h"
#include "engine/runtime/grammar/gbnf_parser.h"
#include "engine/runtime/grammar/grammar_matcher.h"
#include "engine/runtime/grammar/int_range_gbnf.h"
#include "engine/runtime/grammar/json_gbnf_rules.h"
#include "engine/runtime/grammar/json_schema.h"
#include "engine/runtime/grammar/pattern_gbnf.h"
#include "engine/runtime/grammar/token_vocabulary.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

using grammar::GrammarMatcher;
using grammar::TokenVocabulary;
using ojson = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// Helpers

// Every printable ASCII character, a few longer and multi-byte tokens (and the two bytes of "é"
// as tokens of their own), a control token with no text (id 0) and EOS (the last id).
struct CharVocab {
  std::shared_ptr<const TokenVocabulary> v;
  int32_t eos = -1;
  int32_t id(const std::string& text) const {
    for (int32_t i = 0; i < v->n_tokens(); ++i) {
      if (v->text(i) == text && i != eos) return i;
    }
    return -1;
  }
};

const CharVocab& char_vocab() {
  static const CharVocab cv = [] {
    std::vector<std::string> t = {""};
    for (int c = 0x20; c < 0x7F; ++c) t.push_back(std::string(1, static_cast<char>(c)));
    for (const char* s : {"\n", "\t", "\":", "{\"", "},", "true", "false", "null", "\xC3\xA9", "\xC3", "\xA9",
                          "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\\n", "\\u00e9", "12", "-3", "\xC0"}) {
      t.push_back(s);
    }
    t.push_back("</s>");
    CharVocab v;
    v.eos = static_cast<int32_t>(t.size()) - 1;
    v.v = std::make_shared<const TokenVocabulary>(std::move(t), std::vector<int32_t>{v.eos});
    return v;
  }();
  return cv;
}

std::shared_ptr<const grammar::Grammar> compile(const std::string& gbnf) {
  return std::make_shared<const grammar::Grammar>(grammar::parse_gbnf(gbnf));
}

bool matches(const std::string& gbnf, const std::string& text) {
  GrammarMatcher m(compile(gbnf), char_vocab().v);
  return m.accept_text(text) && m.can_end();
}

// The FormatError message of parsing `gbnf` ("" when it parses).
std::string parse_error(const std::string& gbnf) {
  try {
    grammar::parse_gbnf(gbnf);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

// A random path through the grammar over the matcher's vocabulary: tokens that close something
// are favoured so outputs end; EOS is taken half the time it is allowed. nullopt when the path
// did not end within max_tokens.
std::optional<std::string> random_walk(GrammarMatcher& m, std::mt19937_64& rng, int max_tokens = 3000) {
  std::string out;
  const TokenVocabulary& v = m.vocabulary();
  for (int step = 0; step < max_tokens; ++step) {
    const std::vector<uint8_t>& mask = m.mask();
    std::vector<int32_t> ids;
    std::vector<double> w;
    int32_t eos = -1;
    for (int32_t i = 0; i < v.n_tokens(); ++i) {
      if (!mask[static_cast<size_t>(i)]) continue;
      if (v.is_eog(i)) {
        eos = i;
        continue;
      }
      const std::string& t = v.text(i);
      ids.push_back(i);
      w.push_back(t.find_first_of("\"]}") != std::string::npos ? 40.0 : 1.0);
    }
    if (eos >= 0 && (ids.empty() || rng() % 2 == 0)) {
      EXPECT_TRUE(m.accept(eos));
      EXPECT_TRUE(m.ended());
      return out;
    }
    if (ids.empty()) {
      ADD_FAILURE() << "dead end after '" << out << "': no token allowed and the grammar cannot end";
      return std::nullopt;
    }
    std::discrete_distribution<size_t> pick(w.begin(), w.end());
    const int32_t t = ids[pick(rng)];
    out += v.text(t);
    EXPECT_TRUE(m.accept(t)) << "a masked-in token was rejected: '" << v.text(t) << "' after '" << out << "'";
  }
  return std::nullopt;
}

// --- a small JSON schema validator for the subset the converter supports ---

const ojson& resolve(const ojson& root, const std::string& ref) {
  const ojson* t = &root;
  size_t i = 1;
  while (i < ref.size()) {
    size_t j = ref.find('/', i + 1);
    if (j == std::string::npos) j = ref.size();
    const std::string key = ref.substr(i + 1, j - i - 1);
    t = t->is_array() ? &(*t)[std::stoul(key)] : &(*t)[key];
    i = j;
  }
  return *t;
}

size_t code_points(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

bool has_type(const ojson& v, const std::string& t) {
  if (t == "object") return v.is_object();
  if (t == "array") return v.is_array();
  if (t == "string") return v.is_string();
  if (t == "integer") return v.is_number_integer();
  if (t == "number") return v.is_number();
  if (t == "boolean") return v.is_boolean();
  if (t == "null") return v.is_null();
  return false;
}

// Empty when `v` satisfies `s`, else why not.
std::string invalid(const ojson& v, const ojson& s, const ojson& root) {
  if (s.is_boolean()) return s.get<bool>() ? "" : "schema false";
  if (s.contains("$ref")) return invalid(v, resolve(root, s["$ref"].get<std::string>()), root);
  if (s.contains("anyOf")) {
    for (const auto& a : s["anyOf"]) {
      if (invalid(v, a, root).empty()) return "";
    }
    return "no anyOf alternative matches " + v.dump();
  }
  if (s.contains("oneOf")) {
    int n = 0;
    for (const auto& a : s["oneOf"]) n += invalid(v, a, root).empty();
    if (n != 1) return std::to_string(n) + " oneOf alternatives match " + v.dump();
  }
  if (s.contains("allOf")) {
    for (const auto& a : s["allOf"]) {
      const std::string w = invalid(v, a, root);
      if (!w.empty()) return "allOf: " + w;
    }
  }
  if (s.contains("const") && v != s["const"]) return v.dump() + " is not the const " + s["const"].dump();
  if (s.contains("enum")) {
    bool found = false;
    for (const auto& e : s["enum"]) found = found || e == v;
    if (!found) return v.dump() + " is not in the enum";
  }
  if (s.contains("type")) {
    bool ok = false;
    if (s["type"].is_array()) {
      for (const auto& t : s["type"]) ok = ok || has_type(v, t.get<std::string>());
    } else {
      ok = has_type(v, s["type"].get<std::string>());
    }
    if (!ok) return v.dump() + " is not of type " + s["type"].dump();
  }
  if (v.is_object()) {
    if (s.contains("required")) {
      for (const auto& r : s["required"]) {
        if (!v.contains(r.get<std::string>())) return "missing required " + r.get<std::string>();
      }
    }
    for (const auto& [k, x] : v.items()) {
      if (s.contains("properties") && s["properties"].contains(k)) {
        const std::string w = invalid(x, s["properties"][k], root);
        if (!w.empty()) return k + ": " + w;
      } else if (s.contains("additionalProperties")) {
        const std::string w = invalid(x, s["additionalProperties"], root);
        if (!w.empty()) return "additional property " + k + ": " + w;
      }
    }
  }
  if (v.is_array()) {
    if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return "too few items";
    if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return "too many items";
    size_t i = 0;
    if (s.contains("prefixItems")) {
      if (v.size() != s["prefixItems"].size()) return "tuple of the wrong length";
      for (; i < v.size(); ++i) {
        const std::string w = invalid(v[i], s["prefixItems"][i], root);
        if (!w.empty()) return "item " + std::to_string(i) + ": " + w;
      }
    }
    if (s.contains("items")) {
      for (; i < v.size(); ++i) {
        const std::string w = invalid(v[i], s["items"], root);
        if (!w.empty()) return "item " + std::to_string(i) + ": " + w;
      }
    }
  }
  if (v.is_string()) {
    const std::string str = v.get<std::string>();
    if (s.contains("minLength") && code_points(str) < s["minLength"].get<size_t>()) return "string too short";
    if (s.contains("maxLength") && code_points(str) > s["maxLength"].get<size_t>()) return "string too long";
    if (s.contains("pattern") && !std::regex_search(str, std::regex(s["pattern"].get<std::string>()))) {
      return "'" + str + "' does not match " + s["pattern"].get<std::string>();
    }
    if (s.contains("format") && s["format"] == "date" &&
        !std::regex_match(str, std::regex("[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"))) {
      return "'" + str + "' is not a date";
    }
  }
  if (v.is_number()) {
    const double x = v.get<double>();
    if (s.contains("minimum") && x < s["minimum"].get<double>()) return "below minimum";
    if (s.contains("maximum") && x > s["maximum"].get<double>()) return "above maximum";
    if (s.contains("exclusiveMinimum") && x <= s["exclusiveMinimum"].get<double>()) return "not above exclusiveMinimum";
    if (s.contains("exclusiveMaximum") && x >= s["exclusiveMaximum"].get<double>()) return "not below exclusiveMaximum";
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Parser

TEST(GrammarParser, LiteralsSequencesAlternativesGroups) {
  const std::string g = "root ::= \"ab\" (\"c\" | \"de\") tail\ntail ::= \"!\" | \"?\"\n";
  EXPECT_TRUE(matches(g, "abc!"));
  EXPECT_TRUE(matches(g, "abde?"));
  EXPECT_FALSE(matches(g, "abd!"));
  EXPECT_FALSE(matches(g, "abc"));
  EXPECT_FALSE(matches(g, "abc!!"));
  EXPECT_TRUE(matches("root ::= \"\" | \"x\"", ""));
}

TEST(GrammarParser, Repetitions) {
  EXPECT_TRUE(matches("root ::= \"a\"*", ""));
  EXPECT_TRUE(matches("root ::= \"a\"*", "aaaa"));
  EXPECT_FALSE(matches("root ::= \"a\"+", ""));
  EXPECT_TRUE(matches("root ::= \"a\"+", "aaa"));
  EXPECT_TRUE(matches("root ::= \"a\"? \"b\"", "b"));
  EXPECT_TRUE(matches("root ::= \"a\"? \"b\"", "ab"));
  EXPECT_FALSE(matches("root ::= \"a\"? \"b\"", "aab"));
  for (int n = 0; n <= 6; ++n) {
    const std::string s(static_cast<size_t>(n), 'x');
    EXPECT_EQ(matches("root ::= \"x\"{3}", s), n == 3) << n;
    EXPECT_EQ(matches("root ::= \"x\"{2,}", s), n >= 2) << n;
    EXPECT_EQ(matches("root ::= \"x\"{2,4}", s), n >= 2 && n <= 4) << n;
    EXPECT_EQ(matches("root ::= \"x\"{,2}", s), n <= 2) << n;
    EXPECT_EQ(matches("root ::= \"x\"{0,0} \"x\"{1}", s), n == 1) << n;
  }
  // A repetition applies to the whole preceding item: a literal, a class, a group, a rule.
  EXPECT_TRUE(matches("root ::= \"ab\"{2}", "abab"));
  EXPECT_FALSE(matches("root ::= \"ab\"{2}", "abb"));
  EXPECT_TRUE(matches("root ::= (\"a\" | \"bc\")+ d\nd ::= [0-9]", "abcbca7"));
  EXPECT_TRUE(matches("root ::= d{ 2 , 3 }\nd ::= [0-9]", "123"));
}

TEST(GrammarParser, CharacterClassesAndAny) {
  EXPECT_TRUE(matches("root ::= [a-z0-9_]+", "ab_9"));
  EXPECT_FALSE(matches("root ::= [a-z0-9_]+", "aB"));
  EXPECT_TRUE(matches("root ::= [^\"\\\\]*", "anything but quotes"));
  EXPECT_FALSE(matches("root ::= [^\"\\\\]*", "a\"b"));
  EXPECT_TRUE(matches("root ::= [-a]+", "-a-"));
  EXPECT_TRUE(matches("root ::= [a-]+", "-a-"));
  EXPECT_TRUE(matches("root ::= . . .", "a\xC3\xA9\xE4\xB8\xAD"));
  EXPECT_FALSE(matches("root ::= . .", "abc"));
  // Escapes: hex, \u, \U, control characters, the quote, backslash and brackets.
  EXPECT_TRUE(matches("root ::= \"\\x41\\u00e9\\U0001F600\"", "A\xC3\xA9\xF0\x9F\x98\x80"));
  EXPECT_TRUE(matches("root ::= \"\\t\\n\\\\\\\"\"", "\t\n\\\""));
  EXPECT_TRUE(matches("root ::= [\\[\\]]+", "[]]["));
  EXPECT_TRUE(matches("root ::= [\\u00e0-\\u00ff]", "\xC3\xA9"));
  EXPECT_TRUE(matches("root ::= [\xC3\xA0-\xC3\xBF]", "\xC3\xA9"));  // raw UTF-8 in a class
}

TEST(GrammarParser, CommentsNewlinesAndLayout) {
  const std::string g =
      "# a comment line\n"
      "root ::= (       # newlines are fine inside parentheses\n"
      "    \"1. \" move\n"
      "    (\" \" move)*\n"
      ")\n"
      "\n"
      "move ::= piece |   # and after '|'\n"
      "    \"O-O\"\r\n"
      "piece ::= [KQRBN] [a-h] [1-8]   # trailing comment\n";
  EXPECT_TRUE(matches(g, "1. Ke4 O-O Qh8"));
  EXPECT_FALSE(matches(g, "1. Ke9"));
}

TEST(GrammarParser, LlamaCppStyleDetails) {
  // A comment after '|' inside parentheses, a class reaching U+10FFFF, a right-recursive
  // optional rule, raw UTF-8 ranges, '[' and a ',-.' range inside a class.
  const std::string g =
      "root ::= item (sep item)* ws\n"
      "item ::= \"<\" (\n"
      "    [\\x20-\\x3b\\x3d\\x3f-\\U0010FFFF] |  # anything but < and >\n"
      "    \"\\\\\" [<>]\n"
      "  )+ \">\"\n"
      "sep ::= [,-.[] ws\n"
      "ws ::= ([ \\t\\n] ws)?\n";
  EXPECT_TRUE(matches(g, "<a>"));
  EXPECT_TRUE(matches(g, "<\xE4\xB8\xAD \\>>- <x>.\n\t<y>[<z>  "));
  EXPECT_FALSE(matches(g, "<a><b>"));
  EXPECT_FALSE(matches(g, "<a>;<b>"));
  EXPECT_TRUE(matches("root ::= [\xE3\x81\x81-\xE3\x82\x9F]+", "\xE3\x81\x82\xE3\x82\x93"));  // hiragana
}

TEST(GrammarParser, GeneratedRulesAreNamedAfterTheirRule) {
  const grammar::Grammar g = grammar::parse_gbnf("root ::= (\"a\" | item)* \nitem ::= \"b\"{1,3}");
  EXPECT_EQ(g.names[g.root], "root");
  EXPECT_GE(g.find("item"), 0);
  int generated = 0;
  for (const auto& n : g.names) generated += n.rfind("root_", 0) == 0 || n.rfind("item_", 0) == 0;
  EXPECT_GE(generated, 3);
}

TEST(GrammarParser, Errors) {
  struct Case {
    std::string gbnf, what;
  };
  const std::vector<Case> cases = {
      {"root ::= \"abc", "line 1, column 10: unterminated string literal"},
      {"root ::= [a-z", "line 1, column 10: unclosed '['"},
      {"root ::= (\"a\" \"b\"", "line 1, column 10: unclosed '('"},
      {"root ::= \"a\" )", "line 1, column 14: unmatched ')'"},
      {"root ::= \"a\"\n  foo", "line 2, column 6: expected '::=' after rule name 'foo'"},
      {"root ::= foo\n", "line 1, column 10: rule 'foo' is used but never defined"},
      {"item ::= \"x\"\n", "no 'root' rule"},
      {"root ::= \"\\q\"", "line 1, column 11: unknown escape '\\q'"},
      {"root ::= \"\\x4\"", "escape needs 2 hex digits"},
      {"root ::= * \"a\"", "line 1, column 10: '*' must follow an item to repeat"},
      {"root ::= \"a\"{3,1}", "repetition maximum below the minimum"},
      {"root ::= \"a\"{x}", "expected a count in the repetition"},
      {"root ::= \"a\"{2", "expected ',' or '}'"},
      {"root ::= \"a\"{99999}", "repetition count above 10000"},
      {"root = \"a\"", "line 1, column 6: expected '::='"},
      {"my_rule ::= \"a\"", "rule names use letters, digits and '-'"},
      {"root ::= \"a\"\nroot ::= \"b\"", "line 2, column 1: rule 'root' is defined twice"},
      {"root ::= [z-a]", "character range ends before it starts"},
      {"root ::= []", "empty character class"},
      {"root ::= <[128000]>", "token references"},
      {"root ::= \"\xC3\xA9\" \"\\z\"", "line 1, column 15"},  // columns count characters
      {"root ::= expr\nexpr ::= expr \"+\" term | term\nterm ::= [0-9]", "left recursion: rule 'expr'"},
      {"root ::= a\na ::= b? c\nb ::= \"x\"\nc ::= a | \"y\"", "left recursion"},  // through a nullable prefix
      {"root ::= (\"\")*", "left recursion"},  // a repetition of something empty
      {"root ::= " + std::string(300, '(') + "\"a\"" + std::string(300, ')'), "parentheses nested deeper than 256"},
      {"root ::= \"aaaaaaaaaa\"{10000}{10000}", "repetitions too large"},
  };
  for (const Case& c : cases) {
    const std::string e = parse_error(c.gbnf);
    EXPECT_NE(e.find(c.what), std::string::npos) << "grammar: " << c.gbnf << "\nerror: " << e << "\nwanted: " << c.what;
    EXPECT_EQ(e.rfind("grammar: ", 0), 0u) << e;
  }
  EXPECT_EQ(parse_error("root ::= \"ok\"   \n\n"), "");
  EXPECT_EQ(parse_error("root ::= \"x\"? \"x\"{0,3}\nopt ::= (\"\" | \"y\"){0,5}"), "");  // bounded: no recursion
}

// ---------------------------------------------------------------------------------------------
// Matcher

TEST(GrammarMatcher, ArithmeticAcceptsAndRejects) {
  const std::string g =
      "root  ::= expr\n"
      "expr  ::= term ([-+*/] term)*\n"
      "term  ::= num | \"(\" space expr \")\" space\n"
      "num   ::= [0-9]+ space\n"
      "space ::= [ \\t\\n]*\n";
  for (const char* ok : {"1", "1+2", "(1 +2) *3", "((4))", "12/(3-1)\n"}) EXPECT_TRUE(matches(g, ok)) << ok;
  for (const char* bad : {"", "+1", "(1", "1+", "1 2", "1+ 2", "a", "(1))"}) EXPECT_FALSE(matches(g, bad)) << bad;
  GrammarMatcher m(compile(g), char_vocab().v);
  EXPECT_TRUE(m.accept_text("(1 +"));
  EXPECT_FALSE(m.can_end());
  EXPECT_FALSE(m.accept_text(")"));  // rejected text leaves the state as it was
  EXPECT_TRUE(m.accept_text("2)"));
  EXPECT_TRUE(m.can_end());
}

TEST(GrammarMatcher, MaskFollowsTheGrammarAndEosOnlyAtTheEnd) {
  const CharVocab& cv = char_vocab();
  GrammarMatcher m(compile("root ::= \"ab\" | \"a\" [0-9]{2}"), cv.v);
  auto allowed = [&] {
    std::vector<std::string> out;
    const auto& mask = m.mask();
    for (int32_t i = 0; i < cv.v->n_tokens(); ++i) {
      if (mask[static_cast<size_t>(i)]) out.push_back(i == cv.eos ? "<eos>" : cv.v->text(i));
    }
    return out;
  };
  EXPECT_EQ(allowed(), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(m.accept(cv.id("a")));
  EXPECT_EQ(allowed(), (std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "b", "12"}));
  EXPECT_FALSE(m.accept(cv.eos));
  EXPECT_FALSE(m.accept(cv.id("-3")));
  EXPECT_TRUE(m.accept(cv.id("12")));
  EXPECT_EQ(allowed(), (std::vector<std::string>{"<eos>"}));
  EXPECT_FALSE(m.accept(0));  // the control token has no text: never allowed
  EXPECT_TRUE(m.accept(cv.eos));
  EXPECT_TRUE(m.ended());
  EXPECT_EQ(allowed(), std::vector<std::string>{});
  m.reset();
  EXPECT_EQ(allowed(), (std::vector<std::string>{"a"}));
}

TEST(GrammarMatcher, TokensEndingInsideACharacterKeepPartialUtf8) {
  const CharVocab& cv = char_vocab();
  const int32_t lead = cv.id("\xC3"), tail = cv.id("\xA9"), e_acute = cv.id("\xC3\xA9"), a = cv.id("a");
  const int32_t overlong = cv.id("\xC0");
  GrammarMatcher m(compile("root ::= \"\xC3\xA9\" \"a\""), cv.v);
  EXPECT_TRUE(m.allows(lead));
  EXPECT_TRUE(m.allows(e_acute));
  EXPECT_FALSE(m.allows(tail));
  EXPECT_FALSE(m.allows(a));
  EXPECT_TRUE(m.accept(lead));
  const auto& mask = m.mask();
  EXPECT_TRUE(mask[static_cast<size_t>(tail)]);
  EXPECT_EQ(std::count(mask.begin(), mask.end(), 1), 1) << "only the continuation byte may follow";
  EXPECT_FALSE(m.can_end());
  EXPECT_TRUE(m.accept(tail));
  EXPECT_TRUE(m.accept(a));
  EXPECT_TRUE(m.can_end());
  // The lead byte 0xC3 starts U+00C0..U+00FF: allowed where such a character may come.
  GrammarMatcher ascii(compile("root ::= [a-z]+"), cv.v);
  EXPECT_FALSE(ascii.allows(lead));
  GrammarMatcher latin(compile("root ::= [\\u00e0-\\u00ff]"), cv.v);
  EXPECT_TRUE(latin.allows(lead));
  GrammarMatcher not_a(compile("root ::= [^a]"), cv.v);
  EXPECT_TRUE(not_a.allows(lead));
  GrammarMatcher only_e(compile("root ::= [^\\u00c0-\\u00ff]"), cv.v);
  EXPECT_FALSE(only_e.allows(lead));
  GrammarMatcher any(compile("root ::= .+"), cv.v);
  EXPECT_FALSE(any.allows(overlong)) << "0xC0 only starts overlong encodings";
  EXPECT_TRUE(any.allows(cv.id("\xF0\x9F\x98\x80")));
  EXPECT_FALSE(any.accept_text("\xA9"));  // a continuation byte with no lead
}

TEST(GrammarMatcher, LongGenerationsStayBounded) {
  // Every '[' nests deeper: a new stack and new states at each step, so the automaton starts
  // over from the current state now and then instead of growing without end.
  const CharVocab& cv = char_vocab();
  GrammarMatcher m(compile("root ::= a\na ::= \"[\" a \"]\" | \"x\""), cv.v);
  const int depth = 6000;
  size_t most = 0;
  for (int i = 0; i < depth; ++i) {
    if (i % 1000 == 0) {
      const auto& mask = m.mask();
      ASSERT_TRUE(mask[static_cast<size_t>(cv.id("["))] && mask[static_cast<size_t>(cv.id("x"))]);
      ASSERT_FALSE(mask[static_cast<size_t>(cv.id("]"))]);
    }
    ASSERT_TRUE(m.accept(cv.id("[")));
    most = std::max(most, m.n_states());
  }
  EXPECT_LE(most, 4200u);
  ASSERT_TRUE(m.accept(cv.id("x")));
  for (int i = 0; i < depth; ++i) {
    ASSERT_FALSE(m.can_end());
    ASSERT_TRUE(m.accept(cv.id("]"))) << i;
  }
  EXPECT_TRUE(m.can_end());
  EXPECT_FALSE(m.allows(cv.id("]")));
}

TEST(GrammarMatcher, TrieMaskEqualsTokenByTokenChecksOnLlama3) {
  const auto f = GgufFile::open(test::testdata("vocab/vocab-llama3.gguf"));
  const auto tok = Tokenizer::from_gguf(*f);
  const auto vocab = TokenVocabulary::from_tokenizer(*tok);
  const std::string gbnf = grammar::json_schema_to_gbnf(ojson::parse(
      R"({"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer","minimum":-5,"maximum":300},
          "tags":{"type":"array","items":{"enum":["x","y z"]}}},"required":["name","n","tags"],"additionalProperties":false})"));
  GrammarMatcher m(compile(gbnf), vocab);
  GrammarMatcher probe(compile(gbnf), vocab);
  std::mt19937_64 rng(7);
  std::string text;
  int checked = 0;
  for (int step = 0; step < 40 && !m.ended(); ++step) {
    const std::vector<uint8_t> mask = m.mask();
    probe.reset();
    ASSERT_TRUE(probe.accept_text(text));
    std::vector<int32_t> allowed;
    for (int32_t i = 0; i < vocab->n_tokens(); ++i) {
      ASSERT_EQ(mask[static_cast<size_t>(i)] != 0, probe.allows(i)) << "token " << i << " '" << vocab->text(i) << "' after '" << text << "'";
      if (mask[static_cast<size_t>(i)]) allowed.push_back(i);
    }
    ++checked;
    ASSERT_FALSE(allowed.empty());
    const int32_t t = allowed[rng() % allowed.size()];
    if (!vocab->is_eog(t)) text += vocab->text(t);
    ASSERT_TRUE(m.accept(t));
  }
  EXPECT_GE(checked, 10);
  // Control tokens have no text (never allowed); EOS is an end-of-generation token.
  EXPECT_EQ(vocab->text(tok->bos_id()), "");
  EXPECT_TRUE(vocab->is_eog(tok->eos_id()));
}

TEST(GrammarMatcher, ByteFallbackTokensAreTheirByte) {
  const auto f = GgufFile::open(test::testdata("vocab/vocab-llama2.gguf"));
  const auto tok = Tokenizer::from_gguf(*f);
  const auto vocab = TokenVocabulary::from_tokenizer(*tok);
  // SentencePiece byte tokens <0x00>..<0xFF> follow <unk>, <s> and </s>.
  const int32_t byte_a = 3 + 0x41, byte_c3 = 3 + 0xC3;
  ASSERT_EQ(tok->token_to_piece(byte_a), "A");
  EXPECT_EQ(vocab->text(byte_a), "A");
  EXPECT_EQ(vocab->text(byte_c3), "\xC3");
  GrammarMatcher m(compile("root ::= \"A\xC3\xA9\""), vocab);
  EXPECT_TRUE(m.allows(byte_a));
  EXPECT_FALSE(m.allows(tok->bos_id()));
  EXPECT_FALSE(m.allows(tok->eos_id()));
  EXPECT_TRUE(m.accept(byte_a));
  EXPECT_TRUE(m.accept(byte_c3));  // half a character
  EXPECT_FALSE(m.allows(byte_a));
  EXPECT_TRUE(m.accept(3 + 0xA9));
  EXPECT_TRUE(m.allows(tok->eos_id()));
  // SentencePiece's U+2581 is a space: "▁the" is " the".
  const auto ids = tok->encode("the", false, false);  // the space prefix makes it "\u2581the"
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(vocab->text(ids[0]), " the");
}

TEST(GrammarMatcher, MaskTimePerStepOnLlama3) {
  const auto f = GgufFile::open(test::testdata("vocab/vocab-llama3.gguf"));
  const auto tok = Tokenizer::from_gguf(*f);
  auto t0 = std::chrono::steady_clock::now();
  const auto vocab = TokenVocabulary::from_tokenizer(*tok);
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
  };
  const double build_ms = since(t0);
  std::cout << "[ mask    ] llama3: " << vocab->n_tokens() << " tokens, trie of " << vocab->trie().nodes().size()
            << " nodes built in " << build_ms << " ms\n";
  const std::string schema = grammar::json_schema_to_gbnf(ojson::parse(
      R"({"type":"object","properties":{"title":{"type":"string","maxLength":200},
          "year":{"type":"integer","minimum":1900,"maximum":2100},
          "scores":{"type":"array","items":{"type":"number"},"maxItems":20},
          "kind":{"enum":["book","film"]}},"required":["title","year","scores","kind"],
          "additionalProperties":false})"));
  // The worst single mask: a fresh matcher inside a string, where every token but those with a
  // quote, a backslash or a control character is allowed, so the walk visits most of the trie
  // (and learns each state's transitions on the way).
  {
    GrammarMatcher m(compile(schema), vocab);
    ASSERT_TRUE(m.accept_text("{\"title\": \""));
    t0 = std::chrono::steady_clock::now();
    const auto& mask = m.mask();
    const double first = since(t0);
    const auto n = std::count(mask.begin(), mask.end(), 1);
    ASSERT_TRUE(m.accept_text("a"));
    t0 = std::chrono::steady_clock::now();
    m.mask();
    const double again = since(t0);
    std::cout << "[ mask    ] inside a string of at most 200 characters (" << n << " tokens allowed): first mask "
              << first << " ms, after one more character (a new state: the count changed) " << again << " ms\n";
    RecordProperty("string_first_mask_ms", std::to_string(first));
  }
  struct Run {
    const char* what;
    std::string gbnf, prefix;
  };
  const std::vector<Run> runs = {{"schema", schema, ""}, {"any_json", grammar::any_json_gbnf(), "["}};
  for (const Run& r : runs) {
    GrammarMatcher m(compile(r.gbnf), vocab);
    ASSERT_TRUE(m.accept_text(r.prefix));
    std::mt19937_64 rng(3);
    double total = 0, worst = 0, built_total = 0;
    int steps = 0, built = 0;
    while (steps < 300 && !m.ended()) {
      t0 = std::chrono::steady_clock::now();
      const std::vector<uint8_t>& mask = m.mask();
      const double ms = since(t0);
      total += ms;
      worst = std::max(worst, ms);
      if (!m.last_mask_cached()) {
        built_total += ms;
        ++built;
      }
      ++steps;
      // Uniform over the allowed tokens; the end only when nothing else is allowed.
      std::vector<int32_t> allowed;
      int32_t eog = -1;
      for (int32_t i = 0; i < vocab->n_tokens(); ++i) {
        if (!mask[static_cast<size_t>(i)]) continue;
        if (vocab->is_eog(i)) eog = i;
        else allowed.push_back(i);
      }
      ASSERT_TRUE(!allowed.empty() || eog >= 0);
      ASSERT_TRUE(m.accept(allowed.empty() ? eog : allowed[rng() % allowed.size()]));
    }
    std::cout << "[ mask    ] " << r.what << ": " << steps << " steps, mean " << total / steps << " ms/step; "
              << built << " masks built (not cached) at " << built_total / std::max(built, 1) << " ms each; worst "
              << worst << " ms; " << m.n_states() << " automaton states\n";
    RecordProperty(std::string(r.what) + "_mean_ms", std::to_string(total / steps));
    EXPECT_LT(total / steps, 50.0) << "mask much slower than expected";
  }
}

// ---------------------------------------------------------------------------------------------
// JSON schema -> GBNF

struct SchemaCase {
  const char* name;
  const char* schema;
};

const std::vector<SchemaCase>& schema_cases() {
  static const std::vector<SchemaCase> c = {
      {"person", R"({"type":"object","properties":{
          "name":{"type":"string","minLength":1,"maxLength":8},
          "age":{"type":"integer","minimum":0,"maximum":150},
          "tags":{"type":"array","items":{"enum":["a","b","c d"]},"maxItems":3},
          "married":{"type":"boolean"},
          "nick":{"anyOf":[{"type":"string","maxLength":4},{"type":"null"}]}},
          "required":["name","age"],"additionalProperties":false})"},
      {"refs", R"({"$defs":{"point":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},
          "required":["x","y"],"additionalProperties":false}},
          "type":"array","items":{"$ref":"#/$defs/point"},"minItems":1,"maxItems":4})"},
      {"recursive", R"({"definitions":{"node":{"type":"object","properties":{"v":{"type":"integer"},
          "kids":{"type":"array","items":{"$ref":"#/definitions/node"},"maxItems":2}},
          "required":["v"],"additionalProperties":false}},"$ref":"#/definitions/node"})"},
      {"choices", R"({"anyOf":[{"type":"string","pattern":"^[A-Z]{2}-[0-9]{3}$"},
          {"type":"integer","exclusiveMinimum":-20,"maximum":1234},{"type":"null"},{"const":{"k":[1,2]}}]})"},
      {"tuple", R"({"type":"array","prefixItems":[{"type":"string","format":"date"},{"type":"string","format":"time"},
          {"enum":[1,"two",null,true]}]})"},
      {"open object", R"({"type":"object","properties":{"id":{"type":"integer"},"idx":{"type":"string","maxLength":3}},
          "required":["id"]})"},
      {"type list", R"({"type":["string","null"],"maxLength":3})"},
      {"one of", R"({"oneOf":[{"type":"object","properties":{"cat":{"const":true}},"required":["cat"],
          "additionalProperties":false},{"type":"array","maxItems":2,"items":{"type":"boolean"}}]})"},
      {"all of", R"({"allOf":[{"$ref":"#/$defs/a"},{"properties":{"b":{"type":"boolean"}}}],
          "$defs":{"a":{"properties":{"a":{"type":"integer","minimum":-5,"maximum":5}}}}})"},
      {"pattern", R"({"type":"object","properties":{"code":{"type":"string","pattern":"^(ab|c\\.d){1,3}[^a-z\"]?$"},
          "any":{"type":"string","pattern":"^x\\d"}},"required":["code","any"],"additionalProperties":false})"},
      {"anything", R"({})"},
  };
  return c;
}

TEST(GrammarJsonSchema, RandomOutputsParseAndValidate) {
  for (const SchemaCase& c : schema_cases()) {
    SCOPED_TRACE(c.name);
    const ojson schema = ojson::parse(c.schema);
    const std::string gbnf = grammar::json_schema_to_gbnf(schema);
    std::shared_ptr<const grammar::Grammar> g;
    ASSERT_NO_THROW(g = compile(gbnf)) << gbnf;
    GrammarMatcher m(g, char_vocab().v);
    std::mt19937_64 rng(11);
    int ended = 0;
    for (int i = 0; i < 40; ++i) {
      m.reset();
      const auto out = random_walk(m, rng);
      if (!out) continue;
      ++ended;
      ojson v;
      try {
        v = ojson::parse(*out);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "not JSON: " << *out << "\n" << e.what() << "\n" << gbnf;
        continue;
      }
      const std::string why = invalid(v, schema, schema);
      EXPECT_EQ(why, "") << *out << "\n" << gbnf;
    }
    EXPECT_GE(ended, 36) << gbnf;
  }
}

TEST(GrammarJsonSchema, HandWrittenDocuments) {
  const ojson person = ojson::parse(schema_cases()[0].schema);
  const std::string gbnf = grammar::json_schema_to_gbnf(person);
  for (const char* ok : {R"({"name":"Al","age":30})",
                         "{ \"name\": \"B\\u00e9b\", \"age\": 0, \"tags\": [\"a\", \"c d\"], \"married\": false, \"nick\": null }",
                         "{\"name\":\"x\",\"age\":150,\"nick\":\"\\n\"}\n  "}) {
    EXPECT_TRUE(matches(gbnf, ok)) << ok;
    EXPECT_EQ(invalid(ojson::parse(ok), person, person), "") << ok;
  }
  for (const char* bad : {R"({"name":"Al"})", R"({"name":"Al","age":151})", R"({"name":"","age":1})",
                          R"({"name":"Al","age":1,"x":1})", R"({"name":"Al","age":-1})", R"({"name":"Al","age":01})",
                          R"({"name":"Al","age":1,"tags":["a","a","b","c d"]})", R"({"name":"toolongname","age":1})"}) {
    EXPECT_FALSE(matches(gbnf, bad)) << bad;
  }
  // Optional properties keep their order and appear at most once; extra keys of an open object
  // are never one of its property names.
  EXPECT_FALSE(matches(gbnf, R"({"name":"Al","age":1,"married":true,"tags":[]})"));
  EXPECT_FALSE(matches(gbnf, R"({"name":"Al","age":1,"married":true,"married":true})"));
  const std::string open = grammar::json_schema_to_gbnf(ojson::parse(schema_cases()[5].schema));
  EXPECT_TRUE(matches(open, R"({"id":1,"idx":"ab","i":[],"ids":{},"x":null})"));
  EXPECT_FALSE(matches(open, R"({"id":1,"id":2})"));
  EXPECT_FALSE(matches(open, R"({"id":1,"x":1,"idx":3})"));
  // Property names that need rule-name escaping, and one named like a builtin rule.
  const std::string odd = grammar::json_schema_to_gbnf(ojson::parse(
      R"({"type":"object","properties":{"first name":{"type":"string"},"string":{"type":"integer"},"root":{"type":"null"}},
          "required":["first name","string","root"],"additionalProperties":false})"));
  EXPECT_TRUE(matches(odd, R"({"first name":"x","string":5,"root":null})"));
  EXPECT_FALSE(matches(odd, R"({"first name":"x","string":"5","root":null})"));
  // Property order is the schema's with ordered_json; nlohmann::json sorts keys.
  const std::string sorted = grammar::json_schema_to_gbnf(nlohmann::json::parse(
      R"({"type":"object","properties":{"b":{"type":"null"},"a":{"type":"null"}},"required":["b","a"],"additionalProperties":false})"));
  EXPECT_TRUE(matches(sorted, R"({"a":null,"b":null})"));
}

TEST(GrammarJsonSchema, AnyJsonAndObjectMode) {
  const std::string any = grammar::any_json_gbnf();
  for (const char* ok : {"1", "-0.5e+3", "\"s\"", "null", "true", "[1, {\"a\": [ ]}]", "{}"}) {
    EXPECT_TRUE(matches(any, ok)) << ok;
  }
  for (const char* bad : {"01", "[1,]", "{\"a\"}", "'s'", "nul", "\"\x01\"", "1 2"}) EXPECT_FALSE(matches(any, bad)) << bad;
  const std::string object = grammar::json_schema_to_gbnf(ojson::parse(R"({"type":"object"})"));
  EXPECT_TRUE(matches(object, R"({"k": [1, "v"]})"));
  EXPECT_FALSE(matches(object, "[]"));
}

TEST(GrammarJsonSchema, IntegerRangesExactly) {
  const std::vector<std::pair<int64_t, int64_t>> ranges = {{-123, 4567}, {0, 0},   {7, 7},    {-9, -1},
                                                           {10, 99},     {1, 1000}, {-1000, -10}, {95, 105}, {-5, 5}};
  for (const auto& [lo, hi] : ranges) {
    const std::string gbnf = "root ::= " + grammar::int_range_gbnf(lo, hi);
    GrammarMatcher m(compile(gbnf), char_vocab().v);
    for (int64_t n = -11000; n <= 11000; ++n) {
      m.reset();
      const bool ok = m.accept_text(std::to_string(n)) && m.can_end();
      ASSERT_EQ(ok, n >= lo && n <= hi) << n << " in [" << lo << ", " << hi << "]: " << gbnf;
    }
    for (const char* bad : {"-0", "007", "", "-", "+1"}) {
      m.reset();
      EXPECT_FALSE(m.accept_text(bad) && m.can_end()) << bad;
    }
  }
  EXPECT_THROW(grammar::int_range_gbnf(5, 4), InvalidArgument);
  // Open ends stop at 16 digits, as JSON integers do in these grammars.
  GrammarMatcher big(compile("root ::= " + grammar::int_range_gbnf(-grammar::kMaxJsonInteger, 10)), char_vocab().v);
  EXPECT_TRUE(big.accept_text("-9999999999999999") && big.can_end());
}

TEST(GrammarJsonSchema, PatternsMatchLikeStdRegex) {
  const std::vector<std::string> patterns = {"^[a-c]+x?$", "^(ab|cd){1,3}$", "^a.c$", "b\\d",     "^[^a]*$",
                                             "^(?:a|\")\\\\?$", "^\\w{2}\\s?$", "^[\\d\"]{0,2}x$", "^a|b$x"};
  const std::string alphabet = "abcdx1\" \n\\";
  std::mt19937_64 rng(5);
  for (const std::string& p : patterns) {
    SCOPED_TRACE(p);
    if (p == "^a|b$x") {
      EXPECT_THROW(grammar::pattern_gbnf(p), InvalidArgument);
      continue;
    }
    const std::string gbnf = "root ::= \"\\\"\" " + grammar::pattern_gbnf(p) + " \"\\\"\"";
    GrammarMatcher m(compile(gbnf), char_vocab().v);
    const std::regex re(p);
    int agree = 0;
    for (int i = 0; i < 3000; ++i) {
      std::string s;
      const size_t len = rng() % 7;
      for (size_t k = 0; k < len; ++k) s += alphabet[rng() % alphabet.size()];
      m.reset();
      const std::string encoded = nlohmann::json(s).dump();  // the JSON text of the value
      const bool ok = m.accept_text(encoded) && m.can_end();
      ASSERT_EQ(ok, std::regex_search(s, re)) << "'" << encoded << "'\n" << gbnf;
      agree += ok;
    }
    EXPECT_GT(agree, 0) << "no random string matched; the comparison says little";
  }
}

TEST(GrammarJsonSchema, Errors) {
  auto error = [](const char* schema) {
    try {
      grammar::json_schema_to_gbnf(ojson::parse(schema));
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error(R"({"type":"strin"})").find("unknown type 'strin'"), std::string::npos);
  EXPECT_NE(error(R"({"$ref":"https://example.com/s.json"})").find("only local references"), std::string::npos);
  EXPECT_NE(error(R"({"$ref":"#/$defs/nope"})").find("does not resolve"), std::string::npos);
  EXPECT_NE(error(R"({"type":"object","properties":{"p":false}})").find("p: the schema `false`"), std::string::npos);
  EXPECT_NE(error(R"({"type":"string","pattern":"^(?=a)b$"})").find("lookarounds"), std::string::npos);
  EXPECT_NE(error(R"({"type":"integer","minimum":5,"maximum":4})").find("no integer"), std::string::npos);
  EXPECT_NE(error(R"({"type":"array","items":{},"minItems":3,"maxItems":2})").find("maxItems below minItems"), std::string::npos);
  EXPECT_NE(error(R"({"enum":[]})").find("enum must be a non-empty array"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Generation with the fixture models

void generate_under_schemas(const std::string& model_path) {
  CpuModelOptions opt;
  opt.n_threads = 2;
  opt.stage.n_ctx = 512;
  auto m = CpuModel::open(model_path, opt);
  const auto tok = Tokenizer::from_gguf(m->file());
  const auto vocab = TokenVocabulary::from_tokenizer(*tok);
  // Bounded schemas: every string, array and number has a maximum length, so each output must
  // end (the grammar then allows only end-of-generation tokens).
  const std::vector<std::string> schemas = {
      R"({"type":"object","properties":{"name":{"type":"string","maxLength":6},"age":{"type":"integer","minimum":0,"maximum":120},
          "ok":{"type":"boolean"},"tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":2}},
          "required":["name","age"],"additionalProperties":false})",
      R"({"type":"array","items":{"anyOf":[{"type":"integer","minimum":-9,"maximum":9},{"type":"null"},
          {"type":"string","pattern":"^[a-z]{1,3}$"}]},"minItems":1,"maxItems":3})",
  };
  TextHooks hooks;
  hooks.is_eog = [&](int32_t t) { return tok->is_eog(t); };
  const std::vector<int32_t> prompt = tok->encode("Answer in JSON:", true, false);
  int n_done = 0;
  for (const std::string& s : schemas) {
    const ojson schema = ojson::parse(s);
    for (uint64_t seed = 1; seed <= 12; ++seed) {
      GenerationRequest r;
      r.prompt = prompt;
      r.max_tokens = 300;
      r.sampling.temperature = 1.0f;
      r.sampling.top_k = 0;
      r.sampling.seed = seed;
      r.sampling.grammar = grammar::json_schema_to_gbnf(schema);
      r.sampling.grammar_vocab = vocab;
      const GenerationResult res = generate(m->stage(), r, hooks);
      std::string text;
      for (int32_t t : res.tokens) text += vocab->text(t);
      ASSERT_EQ(res.reason, StopReason::EndOfGeneration) << "seed " << seed << ": " << text;
      ojson v;
      ASSERT_NO_THROW(v = ojson::parse(text)) << "seed " << seed << ": " << text;
      EXPECT_EQ(invalid(v, schema, schema), "") << "seed " << seed << ": " << text;
      if (seed == 1) std::cout << "[ output  ] " << res.tokens.size() << " tokens: " << text << "\n";
      ++n_done;
    }
  }
  EXPECT_EQ(n_done, 24);
}

TEST(GrammarGenerate, TinyLlamaOutputsValidJson) { generate_under_schemas(test::model_path("tiny-llama-Q8_0")); }

TEST(GrammarGenerate, DefaultModelOutputsValidJson) {
  generate_under_schemas(std::string(PIPELLM_SOURCE_DIR) + "/models/default.gguf");
}

TEST(GrammarGenerate, BadGrammarIsRejectedBeforeGenerating) {
  auto m = CpuModel::open(test::model_path("tiny-llama-Q8_0"), CpuModelOptions{});
  GenerationRequest r;
  r.prompt = {1, 2, 3};
  r.sampling.grammar = "root ::= \"a\" | ";
  r.sampling.grammar += "(";
  try {
    generate(m->stage(), r, TextHooks{});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("grammar: line 1, column 16: unclosed '('"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipellm

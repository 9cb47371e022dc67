// The Jinja engine (engine/tokenizer/jinja): each construct against hand-computed output, the
// errors (positions, raise_exception, limits), and real chat templates against reference
// renderings: Python Jinja2 configured as Hugging Face transformers (tests/data/chat_templates/
// goldens.json), llama.cpp's expected prompts (llama_cpp_cases.json) and the hand-written family
// renderers of engine/tokenizer/chat_template.cpp where those follow the official template.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/jinja/chat.h"
#include "engine/tokenizer/jinja/json.h"
#include "engine/tokenizer/jinja/template.h"

namespace pipellm {
namespace {

using jinja::Value;
using Vars = std::vector<std::pair<std::string, Value>>;

const std::string kDataDir = std::string(PIPELLM_SOURCE_DIR) + "/tests/data/chat_templates/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

Value json(const std::string& text) { return jinja::parse_json(text, "test JSON"); }

// 2025-08-05 (a Tuesday), midnight: the clock of strftime_now in these tests.
std::tm fixed_day() {
  std::tm t{};
  t.tm_year = 125;
  t.tm_mon = 7;
  t.tm_mday = 5;
  t.tm_wday = 2;
  t.tm_yday = 216;
  return t;
}

std::string render(const std::string& tmpl, const Vars& vars = {}, jinja::Limits limits = {}) {
  jinja::RenderOptions o;
  o.now = fixed_day();
  o.limits = limits;
  return jinja::Template(tmpl).render(vars, o);
}

// The FormatError's message of rendering `tmpl` ("" when it renders).
std::string format_error(const std::string& tmpl, const Vars& vars = {}, jinja::Limits limits = {}) {
  try {
    render(tmpl, vars, limits);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

const Vars kVars = {
    {"x", Value::integer(5)},
    {"s", Value::string("h\xC3\xA9llo w\xC3\xB6rld")},  // "héllo wörld"
    {"l", json("[3, 1, 2]")},
    {"d", json(R"({"b": 1, "a": [1, {"c": null}]})")},
    {"messages", json(R"([{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"}])")},
};

// ---- the language ----

TEST(JinjaOutput, LiteralsAndPythonPrinting) {
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none ~ true }}|{{ \"dq\" 'adjacent' }}"), "a1NoneTrue|dqadjacent");
  EXPECT_EQ(render("{{ 1.0 }} {{ 1e16 }} {{ 1e15 }} {{ 0.00001 }} {{ 0.1 + 0.2 }} {{ -0.0 }} {{ 1_000 }} {{ 0x1f }}"),
            "1.0 1e+16 1000000000000000.0 1e-05 0.30000000000000004 -0.0 1000 31");
  EXPECT_EQ(render("{{ [1, 'a', none, true, 1.5] }} {{ {'k': 'v'} }} {{ (1, 2) }} {{ (1,) }} {{ undefined_name }}."),
            "[1, 'a', None, True, 1.5] {'k': 'v'} (1, 2) (1,) .");
  EXPECT_EQ(render("{{ \"it's\" }} {{ [\"it's\", 'a\\nb'] }}"), "it's [\"it's\", 'a\\nb']");
  EXPECT_EQ(render("{{ '\\t|\\x41|\\u00e9|\\\\|\\q' }}"), "\t|A|\xC3\xA9|\\|\\q");  // unknown escapes stay
  EXPECT_EQ(render("{{ 'a\\\nb' }}"), "ab");  // a backslash-newline in a string is dropped
}

TEST(JinjaWhitespace, TrimBlocksLstripBlocksAndMinus) {
  // HF: trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it.
  EXPECT_EQ(render("a\n  {% if true %}\n  x\n  {% endif %}\nb"), "a\n  x\nb");
  EXPECT_EQ(render("{%- if true -%}  \n  x  \n{%- endif %}"), "x");
  EXPECT_EQ(render("a  {{- ' b ' -}}  c"), "a b c");
  EXPECT_EQ(render("{{ 'x' }}\n{{ 'y' }}\n"), "x\ny");  // {{ }} keeps its newline; one trailing newline goes
  EXPECT_EQ(render("  {%+ if true %}x{% endif +%}\ny"), "  x\ny");  // + turns both off
  EXPECT_EQ(render("{# a comment #}\n  {# another #}\nz"), "z");
  EXPECT_EQ(render("a {% raw %}{{ not rendered }}{% endraw %} b"), "a {{ not rendered }} b");
  EXPECT_EQ(render("x\r\ny\r\n"), "x\ny");
}

TEST(JinjaStatements, IfElifElse) {
  const std::string t = "{% if x == 5 %}five{% elif x == 6 %}six{% else %}other{% endif %}";
  EXPECT_EQ(render(t, {{"x", Value::integer(5)}}), "five");
  EXPECT_EQ(render(t, {{"x", Value::integer(6)}}), "six");
  EXPECT_EQ(render(t, {{"x", Value::integer(7)}}), "other");
  EXPECT_EQ(render("{% if undefined_name %}a{% elif '' %}b{% elif [0] %}c{% endif %}"), "c");
}

TEST(JinjaStatements, ForLoopVariables) {
  EXPECT_EQ(render("{% for a in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
                   "{{ loop.revindex }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}",
                   kVars),
            "10TrueFalse331;21FalseFalse3232;32FalseTrue311;");
  EXPECT_EQ(render("{% for a in l if a > 1 %}{{ a }}:{{ loop.index }}/{{ loop.length }} {% endfor %}", kVars), "3:1/2 2:2/2 ");
  EXPECT_EQ(render("{% for a in [] %}x{% else %}empty{% endfor %}|{% for a in l if a > 9 %}x{% else %}none{% endfor %}", kVars),
            "empty|none");
  EXPECT_EQ(render("{% for k in d %}{{ k }}{% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", kVars),
            "ba|b=1;a=[1, {'c': None}];");
  EXPECT_EQ(render("{% for c in 'h\xC3\xA9' %}[{{ c }}]{% endfor %}"), "[h][\xC3\xA9]");
  EXPECT_EQ(render("{% for i in range(6) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}"
                   "{% endfor %}"),
            "023");
  EXPECT_EQ(render("{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.index }}|{% endfor %}"),
            "1x1 1y2 1|2x1 2y2 2|");
  EXPECT_EQ(render("{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}"), "aba");
}

TEST(JinjaStatements, SetScopingAndNamespace) {
  // A set inside a loop body is gone afterwards (and per iteration); namespace() carries state out.
  EXPECT_EQ(render("{% set c = 1 %}{% for i in [1, 2] %}{% set c = c + i %}{{ c }}{% endfor %}{{ c }}"), "231");
  EXPECT_EQ(render("{% set ns = namespace(total=0, found=false) %}{% for i in range(4) %}{% set ns.total = ns.total + i %}"
                   "{% endfor %}{{ ns.total }} {{ ns.found }}"),
            "6 False");
  EXPECT_EQ(render("{% if true %}{% set y = 'leaks' %}{% endif %}{{ y }}"), "leaks");  // if has no scope
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t %} block {{ 1 + 1 }} {% endset %}[{{ t }}]"), "12[ block 2 ]");
  EXPECT_EQ(render("{% set u | upper | trim %} abc {% endset %}[{{ u }}]"), "[ABC]");
  EXPECT_EQ(render("{% set messages = messages[1:] %}{{ messages | length }}", kVars), "1");  // rebinding a variable
}

TEST(JinjaStatements, MacrosAndCallBlocks) {
  EXPECT_EQ(render("{% macro m(a, b=2) %}[{{ a }}|{{ b }}|{{ varargs }}|{{ kwargs }}]{% endmacro %}"
                   "{{ m(1) }}{{ m(1, 3, 4, x=5) }}{{ m(b=7, a=0) }}"),
            "[1|2|()|{}][1|3|(4,)|{'x': 5}][0|7|()|{}]");
  EXPECT_EQ(render("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1) | int }}{% endif %}{% endmacro %}{{ fact(5) }}"),
            "120");
  EXPECT_EQ(render("{% macro wrap(tag) %}<{{ tag }}>{{ caller('x', 2) }}</{{ tag }}>{% endmacro %}"
                   "{% call(a, b) wrap('p') %}{{ a }}{{ b * 2 }}{% endcall %}"),
            "<p>x4</p>");
  EXPECT_EQ(render("{% macro m() %}{% set inner = 1 %}{{ outer }}{% endmacro %}{% set outer = 'o' %}{{ m() }}{{ inner }}."), "o.");
  EXPECT_EQ(render("{% filter upper %}hi {{ 'there' }}{% endfilter %}"), "HI THERE");
  EXPECT_EQ(render("{% generation %}kept{% endgeneration %}"), "kept");  // HF's assistant-mask tag
}

TEST(JinjaExpressions, ArithmeticComparisonLogic) {
  EXPECT_EQ(render("{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** 3 ** 2 }} {{ 5.5 // 2 }}"),
            "3.5 3 -4 2 -2 1024 64 2.0");
  EXPECT_EQ(render("{{ 'ab' * 2 }} {{ [1] * 3 }} {{ [1] + [2] }} {{ -x }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }}", kVars),
            "abab [1, 1, 1] [1, 2] -5 7 9");
  EXPECT_EQ(render("{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ [1, 2] == [1, 2] }} {{ 'a' != 'b' }}"),
            "True False True True True True");
  EXPECT_EQ(render("{{ 'a' in 'cat' }} {{ 3 not in l }} {{ 'b' in d }} {{ 'z' in undefined_name }}", kVars), "True False True False");
  EXPECT_EQ(render("{{ x and 't' }} {{ 0 or 'f' }} {{ not x }} {{ none or [] }} {{ 'a' if x > 3 else 'b' }} {{ 'a' if false }}.", kVars),
            "t f False [] a .");
  EXPECT_EQ(render("{{ 'p' ~ x ~ undefined_name ~ [1] }}", kVars), "p5[1]");
}

TEST(JinjaExpressions, SubscriptsSlicesAttributes) {
  EXPECT_EQ(render("{{ l[0] }}{{ l[-1] }}{{ l[1:] }}{{ l[::-1] }}{{ l[::2] }}{{ l[-2:] }}{{ l[:-1] }}{{ l[5] is defined }}", kVars),
            "32[1, 2][2, 1, 3][3, 2][1, 2][3, 1]False");
  EXPECT_EQ(render("{{ s[1] }}|{{ s[1:4] }}|{{ s[::-1] }}|{{ s[-9:] }}|{{ s | length }}", kVars),
            "\xC3\xA9|\xC3\xA9ll|dlr\xC3\xB6w oll\xC3\xA9h|llo w\xC3\xB6rld|11");
  EXPECT_EQ(render("{{ messages[0].role }} {{ messages[1]['content'] }} {{ messages[0].missing is defined }} {{ d.a[1].c }}", kVars),
            "system Hi False None");
  // As in Python, d.items is the dict's method even when the dict has an "items" key; d['items'] is the key.
  EXPECT_EQ(render("{{ d.items is callable }} {{ d['items'] }}", {{"d", json(R"({"items": 7})")}}), "True 7");
  EXPECT_EQ(render("{{ none.attr is defined }} {{ x.attr is defined }}", kVars), "False False");
}

TEST(JinjaExpressions, Tests) {
  EXPECT_EQ(render("{{ undefined_name is defined }} {{ undefined_name is undefined }} {{ none is none }} {{ x is none }}", kVars),
            "False True True False");
  EXPECT_EQ(render("{{ s is string }} {{ x is string }} {{ d is mapping }} {{ l is mapping }} {{ l is iterable }} {{ s is iterable }}"
                   " {{ x is iterable }} {{ x is number }} {{ 1.5 is number }} {{ true is number }} {{ true is integer }}",
                   kVars),
            "True False True False True True False True True True False");
  EXPECT_EQ(render("{{ 10 is divisibleby 5 }} {{ 3 is odd }} {{ 4 is even }} {{ x is sameas 5 }} {{ none is sameas none }}"
                   " {{ 'A' is upper }} {{ 'a' is lower }} {{ true is boolean }} {{ 1 is boolean }} {{ 2 is in [1, 2] }}"
                   " {{ 'a' is equalto('a') }} {{ x is not none }} {{ range is callable }}",
                   kVars),
            "True True True True True True True True False True True True True");
}

TEST(JinjaFilters, Strings) {
  EXPECT_EQ(render("{{ '  a b  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ s | upper }}|{{ 'AbC' | lower }}|{{ 'hELLO wORLD' | capitalize }}"
                   "|{{ 'hello big-world' | title }}|{{ 'hello' | replace('l', 'L') }}|{{ 'aaa' | replace('a', 'b', 2) }}",
                   kVars),
            "a b|a|H\xC3\x89LLO W\xC3\x96RLD|abc|Hello world|Hello Big-World|heLLo|bba");
  EXPECT_EQ(render("{{ 5 | string ~ '!' }}|{{ [1, 2] | string }}|{{ none | string }}|{{ '<b>' | safe }}|{{ '<a&b>' | e }}"),
            "5!|[1, 2]|None|<b>|&lt;a&amp;b&gt;");
  EXPECT_EQ(render("{{ 'l1\\nl2\\n\\nl4' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}"), "l1\n  l2\n\n  l4|  a\n  b");
  EXPECT_EQ(render("{{ '42' | int + 1 }} {{ '4.5' | float }} {{ 'x' | int }} {{ 3.9 | int }} {{ 2.5 | round }} {{ 3.14159 | round(2) }}"
                   " {{ -3 | abs }}"),
            "43 4.5 0 3 2.0 3.14 3");
}

TEST(JinjaFilters, Sequences) {
  EXPECT_EQ(render("{{ l | length }} {{ l | count }} {{ d | length }} {{ l | first }} {{ l | last }} {{ 'abc' | first }}"
                   " {{ [] | first is defined }} {{ l | sort }} {{ l | sort(reverse=true) }} {{ l | sum }} {{ l | min }} {{ l | max }}",
                   kVars),
            "3 3 2 3 2 a False [1, 2, 3] [3, 2, 1] 6 1 3");
  EXPECT_EQ(render("{{ l | join(',') }}|{{ l | reverse | list }}|{{ 'abc' | reverse }}|{{ 'ab' | list }}|{{ [1, 1, 2, 1] | unique | list }}"
                   "|{{ d | dictsort }}|{{ d | items | list }}",
                   kVars),
            "3,1,2|[2, 1, 3]|cba|['a', 'b']|[1, 2]|[('a', [1, {'c': None}]), ('b', 1)]|[('b', 1), ('a', [1, {'c': None}])]");
  const Vars people = {{"p", json(R"([{"n": "a", "age": 3}, {"n": "b"}, {"n": "c", "age": 9}])")}};
  EXPECT_EQ(render("{{ p | selectattr('age') | map(attribute='n') | join }}|{{ p | rejectattr('age') | map(attribute='n') | list }}"
                   "|{{ p | selectattr('n', 'equalto', 'c') | list | length }}|{{ p | map(attribute='age', default=0) | list }}"
                   "|{{ p | map(attribute='age') | select('defined') | list }}|{{ ['A', 'b'] | map('lower') | join }}"
                   "|{{ [1, 2, 3, 4] | select('odd') | list }}|{{ [1, 2, 3, 4] | reject('odd') | list }}",
                   people),
            "ac|['b']|1|[3, 0, 9]|[3, 9]|ab|[1, 3]|[2, 4]");
  // Like Python's generators, what select/map/... return is always true and has no length.
  EXPECT_EQ(render("{% if [] | select('odd') %}always{% endif %}|{{ [] | select('odd') | list | length }}"), "always|0");
  EXPECT_NE(format_error("{{ [1] | map('string') | length }}").find("no len()"), std::string::npos);
  EXPECT_EQ(render("{{ undefined_name | default('d') }}{{ '' | default('d') }}{{ '' | default('d', true) }}{{ none | d('n') }}"), "ddNone");
}

TEST(JinjaFilters, ToJsonAsHuggingFace) {
  const Vars v = {{"o", json(R"({"b": [1, 2.5, {"c": null}], "a": "\u00e9\n\"q\"\\", "t": true, "e": {}, "f": []})")}};
  EXPECT_EQ(render("{{ o | tojson }}", v), "{\"b\": [1, 2.5, {\"c\": null}], \"a\": \"\xC3\xA9\\n\\\"q\\\"\\\\\", \"t\": true, \"e\": {}, \"f\": []}");
  EXPECT_EQ(render("{{ o.b | tojson(indent=2) }}", v), "[\n  1,\n  2.5,\n  {\n    \"c\": null\n  }\n]");
  EXPECT_EQ(render("{{ o.a | tojson(ensure_ascii=true) }}", v), "\"\\u00e9\\n\\\"q\\\"\\\\\"");
  EXPECT_EQ(render("{{ {'z': 1, 'a': 2} | tojson(sort_keys=true) }}|{{ [1, 2] | tojson(separators=(',', ':')) }}"), "{\"a\": 2, \"z\": 1}|[1,2]");
  EXPECT_EQ(render("{{ '<tag>&' | tojson }}"), "\"<tag>&\"");  // no HTML escaping, unlike Jinja's own tojson
}

TEST(JinjaMethods, StrDictList) {
  EXPECT_EQ(render("{{ 'a b  c'.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a b c'.split(' ', 1) }}{{ 'a.b.c'.rsplit('.', 1) }}"
                   "{{ 'x\\ny'.splitlines() }}"),
            "['a', 'b', 'c']['a', 'b', '', 'c']['a', 'b c']['a.b', 'c']['x', 'y']");
  EXPECT_EQ(render("{{ '  x '.strip() }}|{{ '\\nx\\n'.lstrip('\\n') }}|{{ 'x..'.rstrip('.') }}|{{ 'abc'.startswith('a') }}"
                   "|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'ab'.upper() }}|{{ 'hello world'.title() }}|{{ 'user'.capitalize() }}"
                   "|{{ 'abcb'.find('b') }}|{{ 'abcb'.rfind('b') }}|{{ 'abcb'.count('b') }}|{{ '-'.join(['a', 'b']) }}"
                   "|{{ 'ab'.replace('', '-') }}|{{ '12'.isdigit() }}"),
            "x|x\n|x|True|True|AB|Hello World|User|1|3|2|a-b|-a-b-|True");
  EXPECT_EQ(render("{{ d.get('b') }} {{ d.get('zz', 9) }} {{ d.get('zz') }} {{ d.keys() | list }} {{ d.values() | list | length }}"
                   " {{ l.index(1) }} {{ l.count(3) }}",
                   kVars),
            "1 9 None ['b', 'a'] 2 1 1");
  // Qwen 3's reasoning split.
  EXPECT_EQ(render("{{ c.split('</think>')[-1].lstrip('\\n') }}|{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}",
                   {{"c", Value::string("<think>\nplan\n</think>\n\nanswer")}}),
            "answer|plan");
}

TEST(JinjaGlobals, RangeNamespaceDictStrftime) {
  EXPECT_EQ(render("{{ range(3) | list }}{{ range(1, 10, 3) | list }}{{ range(5, 0, -2) | list }}{{ range(0) | list }}"),
            "[0, 1, 2][1, 4, 7][5, 3, 1][]");
  EXPECT_EQ(render("{{ namespace(a=1).a }} {{ dict(k='v') }} {{ namespace({'x': 2}, y=3).x }}"), "1 {'k': 'v'} 2");
  EXPECT_EQ(render("{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%d %b %Y') }}"), "2025-08-05|05 Aug 2025");
  // Variables passed in replace the builtins of the same name.
  EXPECT_EQ(render("{{ range }}", {{"range", Value::string("mine")}}), "mine");
}

// ---- errors ----

TEST(JinjaErrors, SyntaxErrorsNameLineAndColumn) {
  const auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                               : ::testing::AssertionFailure() << "'" << part << "' not in: " << msg;
  };
  EXPECT_TRUE(has(format_error("Hello\n{% for x in y %}"), "line 2 column 1: '{% for %}' is never closed (expected '{% endfor %}')"));
  EXPECT_TRUE(has(format_error("{{ x |nosuch }}"), "line 1 column 7: unknown filter 'nosuch'"));
  EXPECT_TRUE(has(format_error("{{ x is nosuch }}"), "line 1 column 9: unknown test 'nosuch'"));
  EXPECT_TRUE(has(format_error("a\n  {{ 1 + }}"), "line 2 column 10: unexpected end of expression '}}'"));
  EXPECT_TRUE(has(format_error("{% foo %}"), "line 1 column 4: unknown tag 'foo'"));
  EXPECT_TRUE(has(format_error("{% if x %}{% endfor %}"), "line 1 column 14: unexpected '{% endfor %}'"));
  EXPECT_TRUE(has(format_error("x\n\n{{ 'abc }}"), "line 3 column 4: unterminated string literal"));
  EXPECT_TRUE(has(format_error("{{ x ) }}"), "line 1 column 6: unexpected ')'"));
  EXPECT_TRUE(has(format_error("{{ x "), "line 1 column 1: unclosed expression: missing '}}'"));
  EXPECT_TRUE(has(format_error("{{ x }"), "line 1 column 6: unexpected '}'"));
  EXPECT_TRUE(has(format_error("{# no end"), "missing end of comment tag"));
  EXPECT_TRUE(has(format_error("{% break %}"), "'break' outside a for loop"));
  // Constructs outside the subset are named.
  EXPECT_TRUE(has(format_error("{% include 'other.jinja' %}"), "line 1 column 4: the '{% include %}' tag is not supported"));
  EXPECT_TRUE(has(format_error("{% for x in l recursive %}{% endfor %}"), "recursive for loops are not supported"));
  EXPECT_TRUE(has(format_error("{{ f(*args) }}"), "*args / **kwargs in a call are not supported"));
  EXPECT_TRUE(has(format_error("{{ '%s' % x }}", kVars), "printf-style string formatting"));
}

TEST(JinjaErrors, RuntimeErrorsNameTheExpression) {
  const std::string undefined_attr = format_error("line 1\n{{ messages.foo.bar }}", kVars);
  EXPECT_NE(undefined_attr.find("line 2 column 16: 'list object' has no attribute 'foo'"), std::string::npos) << undefined_attr;
  const std::string type_error = format_error("{{ 'a' + 1 }}");
  EXPECT_NE(type_error.find("line 1 column 4: unsupported operand type(s) for +: 'str' and 'int'"), std::string::npos) << type_error;
  EXPECT_NE(format_error("{{ nothing.x }}").find("'nothing' is undefined"), std::string::npos);
  EXPECT_NE(format_error("{{ nothing() }}").find("'nothing' is undefined"), std::string::npos);
  EXPECT_NE(format_error("{% for i in 5 %}{% endfor %}").find("'int' object is not iterable"), std::string::npos);
  EXPECT_NE(format_error("{% set q = 1 %}{% set q.a = 2 %}").find("is not a namespace()"), std::string::npos);
  EXPECT_NE(format_error("{{ 1 // 0 }}").find("division by zero"), std::string::npos);
  EXPECT_NE(format_error("{{ [1] | join(attribute=1, d=2, x=3) }}").find("unexpected keyword argument 'x'"), std::string::npos);
}

TEST(JinjaErrors, RaiseExceptionIsInvalidArgumentWithTheMessage) {
  try {
    render("{% if x > 1 %}{{ raise_exception('Only ' ~ x ~ ' roles') }}{% endif %}", kVars);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("Only 5 roles"), std::string::npos) << e.what();
  }
}

TEST(JinjaErrors, LimitsStopHostileTemplates) {
  const auto has = [](const std::string& msg, const char* part) { return msg.find(part) != std::string::npos; };
  // Unbounded recursion.
  EXPECT_TRUE(has(format_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), "recursion limit"));
  // Nested loops: 10^10 iterations stop at the step budget.
  jinja::Limits small;
  small.max_steps = 100000;
  EXPECT_TRUE(has(format_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {}, small),
                  "iteration limit"));
  // The default budget also stops it (in well under a second).
  EXPECT_TRUE(has(format_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"), "iteration limit"));
  // Quadratic copying (a list grown one item at a time) is counted too.
  EXPECT_TRUE(has(format_error("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}"),
                  "iteration limit"));
  // Output growth.
  jinja::Limits out;
  out.max_output = 100000;
  EXPECT_TRUE(has(format_error("{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}", {}, out), "output size limit"));
  // Doubling a string, repeating one, a huge range: refused before they are built.
  jinja::Limits size;
  size.max_size = 1 << 20;
  EXPECT_TRUE(has(format_error("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", {},
                               size),
                  "larger than the size limit"));
  EXPECT_TRUE(has(format_error("{% set ns = namespace(s=['x']) %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                               {}, size),
                  "result too large"));
  EXPECT_TRUE(has(format_error("{{ 'x' * 10000000000 }}"), "result too large"));
  EXPECT_TRUE(has(format_error("{{ range(1000000000000) | length }}"), "above the limit"));
  // Deep nesting is refused by the parser, not by the stack.
  EXPECT_TRUE(has(format_error("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"), "nesting deeper than"));
  EXPECT_TRUE(has(format_error("{{ " + std::string(3000, '[') + std::string(3000, ']') + " }}"), "nesting deeper than"));
  std::string ifs;
  for (int i = 0; i < 500; ++i) ifs += "{% if true %}";
  EXPECT_TRUE(has(format_error(ifs), "nesting deeper than"));
}

// ---- real templates ----

nlohmann::ordered_json load_json(const std::string& file) { return nlohmann::ordered_json::parse(read_file(kDataDir + file)); }

// Each real template x conversation of goldens.json equals Python Jinja2's rendering with HF's
// settings byte for byte (or raises the same raise_exception message, or fails as Python did).
TEST(JinjaRealTemplates, MatchHuggingFaceRenderings) {
  const auto g = load_json("goldens.json");
  ASSERT_GE(g["cases"].size(), 300u);
  jinja::RenderOptions o;
  o.now = fixed_day();
  ASSERT_EQ(g["date"], "2025-08-05");
  int rendered = 0;
  for (const auto& c : g["cases"]) {
    const std::string name = c["template"].get<std::string>() + " / " + c["conversation"].get<std::string>() +
                             (c["tools"].get<bool>() ? " / tools" : "") +
                             (c["add_generation_prompt"].get<bool>() ? " / gen" : "");
    SCOPED_TRACE(name);
    const std::string tmpl = read_file(kDataDir + c["template"].get<std::string>());
    const Value messages = json(g["conversations"][c["conversation"].get<std::string>()].dump());
    Vars extra;
    if (c["tools"].get<bool>()) extra.emplace_back("tools", json(g["tools"].dump()));
    if (c.contains("variables")) {
      const Value variables = json(c["variables"].dump());  // kept alive: entries() refers into it
      for (const auto& [k, v] : variables.entries()) extra.emplace_back(k, v);
    }
    const auto run = [&]() {
      return jinja::render_chat_template(tmpl, messages, c["add_generation_prompt"].get<bool>(), c["bos_token"].get<std::string>(),
                                         c["eos_token"].get<std::string>(), extra, o);
    };
    if (c.contains("expected")) {
      EXPECT_EQ(run(), c["expected"].get<std::string>());
      ++rendered;
    } else if (c.contains("raises")) {
      try {
        run();
        ADD_FAILURE() << "expected raise_exception(" << c["raises"] << ")";
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find(c["raises"].get<std::string>()), std::string::npos) << e.what();
      }
    } else {
      EXPECT_THROW(run(), FormatError);
    }
  }
  EXPECT_GE(rendered, 300);
}

// llama.cpp's expected prompts (tests/test-chat-template.cpp) on its six-message conversation.
TEST(JinjaRealTemplates, MatchLlamaCppExpectations) {
  const auto g = load_json("llama_cpp_cases.json");
  ASSERT_GE(g["cases"].size(), 25u);
  for (const auto& c : g["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::string tmpl = c.contains("template") ? c["template"].get<std::string>()
                                                    : read_file(kDataDir + c["template_file"].get<std::string>());
    nlohmann::ordered_json conv = g["conversation"];
    if (c["fold_system"].get<bool>()) {  // llama.cpp joins the system text to the first user turn for these
      conv[1]["content"] = conv[0]["content"].get<std::string>() + "\n" + conv[1]["content"].get<std::string>();
      conv.erase(conv.begin());
    }
    EXPECT_EQ(jinja::render_chat_template(tmpl, json(conv.dump()), true, c["bos_token"].get<std::string>(),
                                          c["eos_token"].get<std::string>()),
              c["expected"].get<std::string>());
  }
}

std::vector<ChatMessage> chat_messages(const nlohmann::ordered_json& conv) {
  std::vector<ChatMessage> out;
  for (const auto& m : conv) {
    ChatMessage cm{m["role"].get<std::string>(), m["content"].get<std::string>()};
    if (m.contains("reasoning_content")) cm.reasoning_content = m["reasoning_content"].get<std::string>();
    if (m.contains("tool_calls")) cm.tool_calls = m["tool_calls"].dump();
    if (m.contains("tool_call_id")) cm.tool_call_id = m["tool_call_id"].get<std::string>();
    if (m.contains("name")) cm.name = m["name"].get<std::string>();
    out.push_back(std::move(cm));
  }
  return out;
}

// apply_chat_template (ChatMessage in, tools as JSON text) renders the goldens through Jinja too.
TEST(JinjaRealTemplates, ApplyChatTemplateRendersTheGoldens) {
  const auto g = load_json("goldens.json");
  ChatTemplateOptions o;
  o.date = g["date"].get<std::string>();
  for (const auto& c : g["cases"]) {
    if (!c.contains("expected")) continue;
    SCOPED_TRACE(c["template"].get<std::string>() + " / " + c["conversation"].get<std::string>());
    ChatTemplateOptions oc = o;
    if (c["tools"].get<bool>()) oc.tools = g["tools"].dump();
    if (c.contains("variables")) oc.variables = c["variables"].dump();
    EXPECT_EQ(apply_chat_template(read_file(kDataDir + c["template"].get<std::string>()),
                                  chat_messages(g["conversations"][c["conversation"].get<std::string>()]),
                                  c["add_generation_prompt"].get<bool>(), c["bos_token"].get<std::string>(),
                                  c["eos_token"].get<std::string>(), oc),
              c["expected"].get<std::string>());
  }
}

// Where a hand-written family renderer follows the official template, the Jinja engine running
// that template agrees with it.
TEST(JinjaRealTemplates, AgreeWithTheFamilyRenderers) {
  const auto g = load_json("goldens.json");
  struct Case {
    const char* file;
    const char* conversation;
    bool gen;
    const char* bos;
    const char* eos;
  };
  const Case cases[] = {
      {"llama3-8b-instruct.jinja", "system_history", true, "<|begin_of_text|>", "<|eot_id|>"},
      {"llama3-8b-instruct.jinja", "whitespace_unicode", true, "<|begin_of_text|>", "<|eot_id|>"},
      {"qwen3.jinja", "system_history", true, "", "<|im_end|>"},
      {"qwen3.jinja", "multi_turn", false, "", "<|im_end|>"},
      {"qwen2.5-instruct.jinja", "user", true, "", "<|im_end|>"},  // Qwen 2.5's default system prompt
      {"qwen2.5-instruct.jinja", "system_history", true, "", "<|im_end|>"},
      {"gemma3-it.jinja", "system_history", true, "<bos>", "<eos>"},
      {"gemma3-it.jinja", "whitespace_unicode", false, "<bos>", "<eos>"},
      {"gemma-it.jinja", "multi_turn", true, "<bos>", "<eos>"},
      {"phi-3.5-mini-instruct.jinja", "system_history", true, "<s>", "<|endoftext|>"},
      {"gpt-oss-120b.jinja", "system_history", true, "", "<|return|>"},
      {"gpt-oss-120b.jinja", "assistant_last", false, "", "<|return|>"},
      {"gpt-oss-120b.jinja", "multi_turn", true, "", "<|return|>"},
  };
  ChatTemplateOptions jinja_opts, family_opts;
  jinja_opts.date = family_opts.date = "2025-08-05";
  family_opts.use_jinja = false;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.file) + " / " + c.conversation);
    const std::string tmpl = read_file(kDataDir + c.file);
    const auto msgs = chat_messages(g["conversations"][c.conversation]);
    const std::string via_jinja = apply_chat_template(tmpl, msgs, c.gen, c.bos, c.eos, jinja_opts);
    EXPECT_EQ(via_jinja, apply_chat_template(tmpl, msgs, c.gen, c.bos, c.eos, family_opts));
  }
}

TEST(JinjaChat, OptionsReachTheTemplate) {
  const std::string gptoss = read_file(kDataDir + "gpt-oss-120b.jinja");
  ChatTemplateOptions o;
  o.date = "2024-02-29";
  o.reasoning_effort = "high";
  const std::string p = apply_chat_template(gptoss, {{"user", "Hi"}}, true, "", "", o);
  EXPECT_NE(p.find("Current date: 2024-02-29\n\nReasoning: high\n\n"), std::string::npos) << p;
  // Extra variables: Qwen 3's enable_thinking=false writes an empty think block.
  const std::string qwen3 = read_file(kDataDir + "qwen3.jinja");
  o.variables = R"({"enable_thinking": false})";
  EXPECT_EQ(apply_chat_template(qwen3, {{"user", "Hi"}}, true, "", "", o),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  o.variables = "[1]";
  EXPECT_THROW(apply_chat_template(qwen3, {{"user", "Hi"}}, true, "", "", o), InvalidArgument);
  o.variables.reset();
  o.tools = "{not json";
  EXPECT_THROW(apply_chat_template(qwen3, {{"user", "Hi"}}, true, "", "", o), InvalidArgument);
}

TEST(JinjaChat, FallsBackToTheFamilyRendererOnlyWhenJinjaFails) {
  // A ChatML template using a filter outside the subset: the chatml renderer takes over.
  const std::string tmpl =
      "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content | wordwrap(80) + '<|im_end|>\\n' }}{% endfor %}";
  EXPECT_EQ(apply_chat_template(tmpl, {{"user", "Hi"}}, true, "", ""), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // raise_exception is the template's answer: no fallback.
  const std::string gemma = read_file(kDataDir + "gemma-it.jinja");
  EXPECT_THROW(apply_chat_template(gemma, {{"system", "S"}, {"user", "Hi"}}, true, "<bos>", ""), InvalidArgument);
  // Neither works: both reasons are given.
  try {
    apply_chat_template("{{ messages | wordwrap }}", {{"user", "Hi"}}, true, "", "");
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unrecognised"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unknown filter 'wordwrap'"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace pipellm

// Tool calls (engine/tokenizer/tool_call_{syntax,parser}.h, runtime/grammar/tool_call_gbnf.h)
// against the real templates in tests/data/chat_templates:
// - which syntax each template writes;
// - OpenAI-form conversations (arguments as JSON strings) converted for the template and rendered
//   equal the reference renderings (goldens.json tool_flow; tool_goldens.json, made by
//   make_tool_goldens.py, for DeepSeek's string arguments, two calls and the follow-up prompt);
// - round trips: what a template writes for an assistant's calls parses back to those calls;
//   hand-written texts in each documented format; malformed calls stay content;
// - the grammar for required calls: random outputs over a small vocabulary parse into calls
//   whose arguments satisfy the schema, and the templates' own call texts match it.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/runtime/grammar/gbnf_parser.h"
#include "engine/runtime/grammar/grammar_matcher.h"
#include "engine/runtime/grammar/tool_call_gbnf.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/streaming_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tool_call_parser.h"
#include "engine/tokenizer/tool_call_syntax.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

using ojson = nlohmann::ordered_json;
using S = ToolCallSyntax;

const std::string kDataDir = std::string(PIPELLM_SOURCE_DIR) + "/tests/data/chat_templates/";
const std::vector<std::string> kTools = {"get_weather", "get_time"};

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string tmpl(const std::string& name) { return read_file(kDataDir + name); }
ojson load_json(const std::string& file) { return ojson::parse(read_file(kDataDir + file)); }

// OpenAI-form messages -> ChatMessage, the tool calls converted for `syntax` as the server does.
std::vector<ChatMessage> messages_for(const ojson& conv, S syntax) {
  std::vector<ChatMessage> out;
  for (const auto& m : conv) {
    ChatMessage cm{m["role"].get<std::string>(), m["content"].get<std::string>()};
    if (m.contains("tool_calls")) cm.tool_calls = template_tool_calls(syntax, m["tool_calls"].dump(), "tool_calls");
    if (m.contains("tool_call_id")) cm.tool_call_id = m["tool_call_id"].get<std::string>();
    if (m.contains("name")) cm.name = m["name"].get<std::string>();
    out.push_back(std::move(cm));
  }
  return out;
}

// Calls as (name, arguments parsed) for comparison regardless of spacing.
std::vector<std::pair<std::string, ojson>> calls_of(const ParsedToolCalls& p) {
  std::vector<std::pair<std::string, ojson>> out;
  for (const ToolCall& c : p.calls) out.emplace_back(c.name, ojson::parse(c.arguments));
  return out;
}

TEST(ToolCallSyntax, DetectedFromTheRealTemplates) {
  const std::vector<std::pair<const char*, S>> cases = {
      {"deepseek-r1.jinja", S::kDeepSeekR1},
      {"deepseek-v3.1.jinja", S::kDeepSeekV3},
      {"gemma-it.jinja", S::kNone},
      {"gemma3-it.jinja", S::kNone},
      {"gemma4.jinja", S::kGemma4},
      {"gpt-oss-120b.jinja", S::kHarmony},
      {"kimi-k2.jinja", S::kNone},  // declares tools but never writes a call
      {"llama3-8b-instruct.jinja", S::kNone},
      {"llama3.1-instruct.jinja", S::kLlama3Json},
      {"llama3.2-instruct.jinja", S::kLlama3Json},
      {"mistral-large-instruct-2407.jinja", S::kMistral},
      {"mistral-nemo-instruct-2407.jinja", S::kMistral},
      {"mistral-small-3.1-24b-instruct-2503.jinja", S::kMistral},
      {"phi-3.5-mini-instruct.jinja", S::kNone},
      {"phi-4.jinja", S::kNone},
      {"qwen2.5-instruct.jinja", S::kHermes},
      {"qwen3.jinja", S::kHermes},
  };
  for (const auto& [file, want] : cases) {
    EXPECT_EQ(tool_call_syntax_name(detect_tool_call_syntax(tmpl(file))), std::string(tool_call_syntax_name(want))) << file;
  }
  EXPECT_EQ(detect_tool_call_syntax(""), S::kNone);
}

// goldens.json's tool_flow (arguments as objects, as HF callers pass them) from the OpenAI form.
TEST(ToolCallRendering, OpenAiFormEqualsTheGoldens) {
  const ojson g = load_json("goldens.json");
  ChatTemplateOptions o;
  o.date = g["date"].get<std::string>();
  o.tools = g["tools"].dump();
  ojson openai = g["conversations"]["tool_flow"];
  for (auto& m : openai) {
    for (auto& c : m.contains("tool_calls") ? m["tool_calls"] : ojson::array()) {
      c["function"]["arguments"] = c["function"]["arguments"].dump();  // a client's JSON string
    }
  }
  int checked = 0;
  for (const auto& c : g["cases"]) {
    if (c["conversation"] != "tool_flow" || !c["tools"].get<bool>() || !c.contains("expected")) continue;
    const std::string file = c["template"].get<std::string>();
    const std::string t = tmpl(file);
    const S syntax = detect_tool_call_syntax(t);
    if (syntax == S::kNone) continue;
    SCOPED_TRACE(file);
    ++checked;
    EXPECT_EQ(apply_chat_template(t, messages_for(openai, syntax), c["add_generation_prompt"].get<bool>(),
                                  c["bos_token"].get<std::string>(), c["eos_token"].get<std::string>(), o),
              c["expected"].get<std::string>());
  }
  EXPECT_EQ(checked, 2 * 9);  // gemma4, gpt-oss, llama3.1, 3.2, three Mistral, qwen2.5, qwen3
}

// tool_goldens.json: every template that writes calls, with DeepSeek's string arguments, two
// calls and the prompt for the answer after the tool results.
TEST(ToolCallRendering, ToolGoldens) {
  const ojson g = load_json("tool_goldens.json");
  ChatTemplateOptions o;
  o.date = g["date"].get<std::string>();
  o.tools = g["tools"].dump();
  for (const auto& c : g["cases"]) {
    const std::string file = c["template"].get<std::string>();
    SCOPED_TRACE(file + " / " + c["conversation"].get<std::string>());
    const std::string t = tmpl(file);
    const auto render = [&] {
      return apply_chat_template(t, messages_for(c["openai"], detect_tool_call_syntax(t)),
                                 c["add_generation_prompt"].get<bool>(), c["bos_token"].get<std::string>(),
                                 c["eos_token"].get<std::string>(), o);
    };
    if (c.contains("raises")) {
      try {
        render();
        ADD_FAILURE() << "rendered; the template refuses this conversation: " << c["raises"];
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find(c["raises"].get<std::string>()), std::string::npos) << e.what();
      }
    } else {
      EXPECT_EQ(render(), c["expected"].get<std::string>());
    }
  }
}

// What the template writes for an assistant's calls (the rendering with the call minus the
// prompt it shares with the generation prompt, up to the end of the turn) parses back.
TEST(ToolCallParse, RoundTripThroughTheTemplates) {
  const ojson g = load_json("goldens.json");
  ChatTemplateOptions o;
  o.date = g["date"].get<std::string>();
  o.tools = g["tools"].dump();
  const ojson paris = {{"city", "Paris"}}, london = {{"city", "London"}, {"days", 2}, {"unit", "celsius"}};
  const std::vector<const char*> files = {"deepseek-r1.jinja", "deepseek-v3.1.jinja", "gemma4.jinja", "gpt-oss-120b.jinja",
                                          "llama3.1-instruct.jinja", "llama3.2-instruct.jinja",
                                          "mistral-large-instruct-2407.jinja", "mistral-nemo-instruct-2407.jinja",
                                          "mistral-small-3.1-24b-instruct-2503.jinja", "qwen2.5-instruct.jinja", "qwen3.jinja"};
  for (const char* file : files) {
    SCOPED_TRACE(file);
    const std::string t = tmpl(file);
    const S syntax = detect_tool_call_syntax(t);
    // Llama 3 and gpt-oss write one call per message.
    const bool two = syntax != S::kLlama3Json && syntax != S::kHarmony;
    ojson calls = ojson::array();
    calls.push_back({{"id", "call12345"}, {"type", "function"},
                     {"function", {{"name", "get_weather"}, {"arguments", paris.dump()}}}});
    if (two) {
      calls.push_back({{"id", "call67890"}, {"type", "function"},
                       {"function", {{"name", "get_time"}, {"arguments", london.dump()}}}});
    }
    const ojson user = ojson::array({{{"role", "user"}, {"content", "Weather?"}}});
    ojson with_call = user;
    with_call.push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", calls}});
    const std::string prompt = apply_chat_template(t, messages_for(user, syntax), true, "", "", o);
    const std::string full = apply_chat_template(t, messages_for(with_call, syntax), false, "", "", o);
    size_t common = 0;
    while (common < prompt.size() && common < full.size() && prompt[common] == full[common]) ++common;
    // Where the generation prompt goes on differently (a thinking opener), not inside a token.
    while (common < prompt.size() && common > 0 && full[common - 1] != '>' && full[common - 1] != '\n') --common;
    std::string said = full.substr(common);
    for (const char* end : {"<|im_end|>", "<|eot_id|>", "</s>", "<|call|>", "<turn|>",
                            "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"}) {
      said = said.substr(0, said.find(end));
    }
    const ParsedToolCalls p = parse_tool_calls(syntax, said, kTools);
    std::vector<std::pair<std::string, ojson>> want = {{"get_weather", paris}};
    if (two) want.emplace_back("get_time", london);
    EXPECT_EQ(calls_of(p), want) << said;
    EXPECT_EQ(p.content.find("get_weather"), std::string::npos) << p.content;
  }
}

struct ParseCase {
  S syntax;
  std::string text;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments as parsed JSON text
  std::string content;                                     // "" with calls; the whole text without
};

// Hand-written from each family's documented format.
TEST(ToolCallParse, DocumentedFormats) {
  const std::string bar = "\xef\xbd\x9c", lo = "\xe2\x96\x81";  // full-width bar, U+2581
  const auto ds = [&](const std::string& what) { return "<" + bar + what + bar + ">"; };
  const std::string calls_begin = ds("tool" + lo + "calls" + lo + "begin"), calls_end = ds("tool" + lo + "calls" + lo + "end");
  const std::string call_begin = ds("tool" + lo + "call" + lo + "begin"), call_end = ds("tool" + lo + "call" + lo + "end");
  const std::string sep = ds("tool" + lo + "sep");
  const std::vector<ParseCase> cases = {
      // Hermes / Qwen
      {S::kHermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
       {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {S::kHermes,
       "<think>\nok\n</think>\n\nLet me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
       "</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": \"{\\\"tz\\\": \\\"CET\\\"}\"}\n</tool_call>",
       {{"get_weather", R"({"city":"Paris"})"}, {"get_time", R"({"tz":"CET"})"}},
       "<think>\nok\n</think>\n\nLet me look."},
      {S::kHermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}", {{"get_weather", "{}"}}, ""},  // cut before </tool_call>
      {S::kHermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": }\n</tool_call>", {}, ""},
      {S::kHermes, "<tool_call>\n{\"name\": \"launch\", \"arguments\": {}}\n</tool_call>", {}, ""},  // not a declared tool
      {S::kHermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": [1]}\n</tool_call>", {}, ""},
      {S::kHermes, "It is sunny.", {}, ""},
      // Llama 3.x
      {S::kLlama3Json, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {S::kLlama3Json, "<|python_tag|>{\"type\": \"function\", \"name\": \"get_time\", \"arguments\": {\"tz\": \"UTC\"}}",
       {{"get_time", R"({"tz":"UTC"})"}}, ""},
      {S::kLlama3Json, "Sure: {\"name\": \"get_weather\", \"parameters\": {}}", {}, ""},
      {S::kLlama3Json, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Par", {}, ""},
      // Mistral
      {S::kMistral, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcDEF123\"}]",
       {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {S::kMistral,
       "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {}}]",
       {{"get_weather", R"({"city":"Paris"})"}, {"get_time", "{}"}}, ""},
      {S::kMistral, "[{\"name\": \"get_time\", \"arguments\": {}}]", {{"get_time", "{}"}}, ""},  // marker not shown
      {S::kMistral, "[1, 2, 3]", {}, ""},
      {S::kMistral, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\"", {}, ""},
      // gpt-oss harmony: recipient after the channel (as models write it) or before (as the template does)
      {S::kHarmony,
       "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather "
       "<|constrain|>json<|message|>{\"city\":\"Paris\"}",
       {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {S::kHarmony, " to=functions.get_time<|channel|>commentary json<|message|>{\"tz\": \"UTC\"}<|call|>",
       {{"get_time", R"({"tz":"UTC"})"}}, ""},
      {S::kHarmony, "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>Hi!", {}, ""},
      {S::kHarmony, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":", {}, ""},
      // DeepSeek R1 and V3.1
      {S::kDeepSeekR1,
       "Checking." + calls_begin + call_begin + "function" + sep + "get_weather\n```json\n{\"city\": \"Paris\"}\n```" + call_end +
           "\n" + call_begin + "function" + sep + "get_time\n```json\n{}\n```" + call_end + calls_end,
       {{"get_weather", R"({"city":"Paris"})"}, {"get_time", "{}"}}, "Checking."},
      {S::kDeepSeekV3, calls_begin + call_begin + "get_weather" + sep + "{\"city\": \"Paris\"}" + call_end + calls_end,
       {{"get_weather", R"({"city":"Paris"})"}}, ""},
      {S::kDeepSeekV3, calls_begin + call_begin + "get_weather" + sep + "{\"city\": " + call_end, {}, ""},
      // Gemma 4
      {S::kGemma4, "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,days:3,deep:{<|\"|>a b<|\"|>:[true,null,1.5]}}<tool_call|>",
       {{"get_weather", R"({"city":"Paris","days":3,"deep":{"a b":[true,null,1.5]}})"}}, ""},
      {S::kGemma4, "<|tool_call>call:get_weather{city:<|\"|>Paris}<tool_call|>", {}, ""},
  };
  for (const ParseCase& c : cases) {
    SCOPED_TRACE(std::string(tool_call_syntax_name(c.syntax)) + ": " + c.text);
    const ParsedToolCalls p = parse_tool_calls(c.syntax, c.text, kTools);
    ASSERT_EQ(p.calls.size(), c.calls.size());
    for (size_t i = 0; i < c.calls.size(); ++i) {
      EXPECT_EQ(p.calls[i].name, c.calls[i].first);
      EXPECT_EQ(ojson::parse(p.calls[i].arguments), ojson::parse(c.calls[i].second));
    }
    // Without calls the text stays content exactly as generated.
    EXPECT_EQ(p.content, c.calls.empty() ? c.text : c.content);
  }
}

TEST(ToolCallParse, WhereAStreamHoldsBack) {
  constexpr size_t npos = std::string::npos;
  EXPECT_EQ(tool_call_start(S::kHermes, "Hello"), npos);
  EXPECT_EQ(tool_call_start(S::kHermes, "Hello <tool"), 6u);
  EXPECT_EQ(tool_call_start(S::kHermes, "Hi <tool_call>\n{\"na"), 3u);
  EXPECT_EQ(tool_call_start(S::kHermes, "a < b"), npos);
  EXPECT_EQ(tool_call_start(S::kLlama3Json, "  {\"name\""), 0u);
  EXPECT_EQ(tool_call_start(S::kLlama3Json, "<|python"), 0u);
  EXPECT_EQ(tool_call_start(S::kLlama3Json, " \n"), 0u);  // blank: may still become a call
  EXPECT_EQ(tool_call_start(S::kLlama3Json, "The {x}"), npos);
  EXPECT_EQ(tool_call_start(S::kMistral, "Sure [TOOL_CALLS]["), 5u);
  EXPECT_EQ(tool_call_start(S::kMistral, "[{\"name"), 0u);
  EXPECT_EQ(tool_call_start(S::kHarmony, "<|channel|>final"), 0u);
  EXPECT_EQ(tool_call_start(S::kGemma4, "ok <|tool_c"), 3u);
  EXPECT_EQ(tool_call_start(S::kNone, "<tool_call>"), npos);
}

// A syntax's markers that are control tokens (Mistral's [TOOL_CALLS], Llama 3.1's <|python_tag|>)
// show in the streamed text only when asked for; other control tokens stay hidden. (Llama 3's
// vocabulary has neither marker: two of its control tokens stand in.)
TEST(ToolCallParse, StreamingDecoderShowsTheMarkers) {
  auto f = GgufFile::open(test::testdata("vocab/vocab-llama3.gguf"));
  const auto tok = Tokenizer::from_gguf(*f);
  const std::vector<int32_t> shown = tok->encode("<|start_header_id|>", false, true);
  const std::vector<int32_t> hidden = tok->encode("<|end_header_id|>", false, true);
  ASSERT_EQ(shown.size(), 1u);
  ASSERT_EQ(hidden.size(), 1u);
  std::vector<int32_t> ids = tok->encode("{\"name\": 1}", false, false);
  ids.insert(ids.begin(), shown[0]);
  ids.push_back(hidden[0]);
  const auto run = [&](StreamingDecoder d) {
    std::string out;
    for (int32_t id : ids) out += d.push(id);
    return out + d.flush();
  };
  EXPECT_EQ(run(StreamingDecoder(*tok)), "{\"name\": 1}");
  EXPECT_EQ(run(StreamingDecoder(*tok, shown)), "<|start_header_id|>{\"name\": 1}");
}

// ---------------------------------------------------------------------------------------------
// The grammar for a required call.

// Printable ASCII, newline, the multi-byte characters of DeepSeek's markers, a few longer
// tokens, and EOS (the last id).
std::shared_ptr<const grammar::TokenVocabulary> vocab() {
  static const auto v = [] {
    std::vector<std::string> t;
    for (int c = 0x20; c < 0x7F; ++c) t.push_back(std::string(1, static_cast<char>(c)));
    for (const char* s : {"\n", "\xef\xbd\x9c", "\xe2\x96\x81", "\"city\"", "get_weather", "<tool_call>", "[TOOL_CALLS]",
                          "<|channel|>", "\": \""}) {
      t.push_back(s);
    }
    t.push_back("</s>");
    const int32_t eos = static_cast<int32_t>(t.size()) - 1;
    return std::make_shared<const grammar::TokenVocabulary>(std::move(t), std::vector<int32_t>{eos});
  }();
  return v;
}

// A random path through the grammar: closing characters favoured so outputs end, EOS taken half
// the time it is allowed. nullopt when it does not end within max_tokens.
std::optional<std::string> random_walk(grammar::GrammarMatcher& m, std::mt19937_64& rng, int max_tokens = 4000) {
  std::string out;
  const auto& v = m.vocabulary();
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
      ids.push_back(i);
      w.push_back(v.text(i).find_first_of("\"]}") != std::string::npos ? 40.0 : 1.0);
    }
    if (eos >= 0 && (ids.empty() || rng() % 2 == 0)) return out;
    if (ids.empty()) return std::nullopt;
    const int32_t pick = ids[std::discrete_distribution<size_t>(w.begin(), w.end())(rng)];
    EXPECT_TRUE(m.accept(pick));
    out += v.text(pick);
  }
  return std::nullopt;
}

const char* kWeatherSchema = R"({"type":"object","properties":{"city":{"type":"string","maxLength":8},
    "unit":{"enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":7}},
    "required":["city"],"additionalProperties":false})";
const char* kTimeSchema = R"({"type":"object","properties":{"tz":{"enum":["UTC","CET"]}},"additionalProperties":false})";

// The schemas above checked by hand; "" when `a` satisfies `name`'s.
std::string violation(const std::string& name, const ojson& a) {
  if (!a.is_object()) return "not an object";
  for (const auto& [k, v] : a.items()) {
    if (name == "get_time") {
      if (k != "tz" || (v != "UTC" && v != "CET")) return "bad " + k;
    } else if (k == "city") {
      if (!v.is_string()) return "city is not a string";
      size_t cps = 0;
      for (unsigned char ch : v.get<std::string>()) cps += (ch & 0xC0) != 0x80;
      if (cps > 8) return "city is longer than 8";
    } else if (k == "unit") {
      if (v != "celsius" && v != "fahrenheit") return "bad unit";
    } else if (k == "days") {
      if (!v.is_number_integer() || v.get<int>() < 1 || v.get<int>() > 7) return "bad days";
    } else {
      return "extra key " + k;
    }
  }
  if (name == "get_weather" && !a.contains("city")) return "no city";
  return "";
}

TEST(ToolCallGrammar, RandomOutputsParseIntoValidCalls) {
  const std::vector<grammar::ToolSchema> tools = {{"get_weather", ojson::parse(kWeatherSchema)},
                                                  {"get_time", ojson::parse(kTimeSchema)}};
  for (S s : {S::kLlama3Json, S::kHermes, S::kMistral, S::kHarmony, S::kDeepSeekR1, S::kDeepSeekV3}) {
    for (bool parallel : {false, true}) {
      SCOPED_TRACE(std::string(tool_call_syntax_name(s)) + (parallel ? " parallel" : ""));
      const std::string gbnf = grammar::tool_call_gbnf(s, tools, parallel);
      std::shared_ptr<const grammar::Grammar> g;
      ASSERT_NO_THROW(g = std::make_shared<const grammar::Grammar>(grammar::parse_gbnf(gbnf))) << gbnf;
      grammar::GrammarMatcher m(g, vocab());
      std::mt19937_64 rng(7);
      int ended = 0;
      size_t most_calls = 0;
      for (int i = 0; i < 30; ++i) {
        m.reset();
        const auto out = random_walk(m, rng);
        if (!out) continue;
        ++ended;
        const ParsedToolCalls p = parse_tool_calls(s, *out, kTools);
        ASSERT_FALSE(p.calls.empty()) << "not parsed: " << *out << "\n" << gbnf;
        EXPECT_EQ(p.content, "") << *out;
        most_calls = std::max(most_calls, p.calls.size());
        for (const ToolCall& c : p.calls) EXPECT_EQ(violation(c.name, ojson::parse(c.arguments)), "") << *out;
      }
      EXPECT_GE(ended, 27);
      if (!parallel) {
        EXPECT_EQ(most_calls, 1u);
      }
    }
  }
}

TEST(ToolCallGrammar, TheTemplatesCallTextsMatch) {
  // As the templates write calls (arguments spaced as json.dumps does).
  const std::string bar = "\xef\xbd\x9c", lo = "\xe2\x96\x81";
  const auto ds = [&](const std::string& what) { return "<" + bar + what + bar + ">"; };
  const std::vector<grammar::ToolSchema> tools = {{"get_weather", ojson::parse(kWeatherSchema)}};
  const std::vector<std::pair<S, std::string>> cases = {
      {S::kLlama3Json, R"({"name": "get_weather", "parameters": {"city": "Paris"}})"},
      {S::kHermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>"},
      {S::kDeepSeekV3, ds("tool" + lo + "calls" + lo + "begin") + ds("tool" + lo + "call" + lo + "begin") + "get_weather" +
                           ds("tool" + lo + "sep") + "{\"city\": \"Paris\"}" + ds("tool" + lo + "call" + lo + "end") +
                           ds("tool" + lo + "calls" + lo + "end")},
  };
  for (const auto& [s, text] : cases) {
    const auto g = std::make_shared<const grammar::Grammar>(grammar::parse_gbnf(grammar::tool_call_gbnf(s, tools, true)));
    grammar::GrammarMatcher m(g, vocab());
    EXPECT_TRUE(m.accept_text(text) && m.can_end()) << text;
  }
}

TEST(ToolCallGrammar, Refusals) {
  const std::vector<grammar::ToolSchema> tools = {{"get_weather", ojson::parse(kWeatherSchema)}};
  EXPECT_THROW(grammar::tool_call_gbnf(S::kGemma4, tools, true), InvalidArgument);
  EXPECT_THROW(grammar::tool_call_gbnf(S::kNone, tools, true), InvalidArgument);
  EXPECT_THROW(grammar::tool_call_gbnf(S::kHermes, {}, true), InvalidArgument);
  try {
    grammar::tool_call_gbnf(S::kHermes, {{"f", ojson::parse(R"({"type":"object","properties":{"x":{"type":"frob"}}})")}}, true);
    ADD_FAILURE() << "no refusal";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("parameters of 'f'"), std::string::npos) << e.what();
  }
  // No parameters: any object.
  const std::string any = grammar::tool_call_gbnf(S::kHermes, {{"ping", nullptr}}, false);
  grammar::GrammarMatcher m(std::make_shared<const grammar::Grammar>(grammar::parse_gbnf(any)), vocab());
  EXPECT_TRUE(m.accept_text("<tool_call>\n{\"name\": \"ping\", \"arguments\": {\"a\": [1]}}\n</tool_call>") && m.can_end());
}

}  // namespace
}  // namespace pipellm

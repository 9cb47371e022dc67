// The OpenAI wire format, field by field: request parsing (every bad field refused by name),
// response and chunk shapes, the error shape and the status of each refusal.
#include <gtest/gtest.h>

#include "coordinator/http_openai.h"
#include "tests/serving/http_refusal.h"

namespace pipellm::coord {
namespace {

using nlohmann::json;

TEST(OpenAiParse, CompletionFields) {
  const json body = json::parse(R"({"model":"x","prompt":"Hello","max_tokens":7,"temperature":0.5,"top_p":0.9,
      "top_k":12,"min_p":0.1,"presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.1,
      "seed":42,"stop":["a","bc"],"n":1,"stream":true,"stream_options":{"include_usage":true}})");
  const OpenAiRequest r = parse_completion_request(body);
  EXPECT_EQ(r.input.kind, GenerateInput::PromptKind::Text);
  EXPECT_EQ(r.input.text, "Hello");
  EXPECT_EQ(*r.input.max_tokens, 7);
  EXPECT_FLOAT_EQ(*r.input.temperature, 0.5f);
  EXPECT_FLOAT_EQ(*r.input.top_p, 0.9f);
  EXPECT_EQ(*r.input.top_k, 12);
  EXPECT_FLOAT_EQ(*r.input.min_p, 0.1f);
  EXPECT_FLOAT_EQ(*r.input.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(*r.input.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(*r.input.repetition_penalty, 1.1f);
  EXPECT_EQ(*r.input.seed, 42u);
  EXPECT_EQ(r.input.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiParse, IgnoreEos) {  // llama-server's field: generate through end-of-generation tokens
  EXPECT_FALSE(parse_completion_request(json{{"prompt", "x"}}).input.ignore_eos);
  EXPECT_FALSE(parse_completion_request(json{{"prompt", "x"}, {"ignore_eos", nullptr}}).input.ignore_eos);
  EXPECT_TRUE(parse_completion_request(json{{"prompt", "x"}, {"ignore_eos", true}}).input.ignore_eos);
  EXPECT_TRUE(parse_chat_request(json::parse(R"({"messages":[{"role":"user","content":"x"}],"ignore_eos":true})"))
                  .input.ignore_eos);
}

TEST(OpenAiParse, PromptForms) {
  EXPECT_EQ(parse_completion_request(json{{"prompt", json::array({1, 2, 3})}}).input.tokens,
            (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_completion_request(json{{"prompt", json::array({json::array({4, 5})})}}).input.tokens,
            (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(parse_completion_request(json{{"prompt", json::array({"hi"})}}).input.text, "hi");
  EXPECT_EQ(parse_completion_request(json{{"prompt", "x"}, {"stop", "END"}}).input.stop,
            (std::vector<std::string>{"END"}));
  EXPECT_EQ(*parse_completion_request(json{{"prompt", "x"}, {"top_k", -1}}).input.top_k, 0);  // -1: off
  // Unset parameters stay unset (the server's defaults apply).
  const auto r = parse_completion_request(json{{"prompt", "x"}, {"temperature", nullptr}});
  EXPECT_FALSE(r.input.temperature);
  EXPECT_FALSE(r.input.max_tokens);
  EXPECT_FALSE(r.stream);
}

TEST(OpenAiParse, ChatMessages) {
  const json body = json::parse(R"({"messages":[{"role":"system","content":"Be brief."},
      {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
      "max_completion_tokens":5})");
  const OpenAiRequest r = parse_chat_request(body);
  EXPECT_EQ(r.input.kind, GenerateInput::PromptKind::Chat);
  ASSERT_EQ(r.input.chat.size(), 2u);
  EXPECT_EQ(r.input.chat[0].role, "system");
  EXPECT_EQ(r.input.chat[1].content, "Hi there");
  EXPECT_EQ(*r.input.max_tokens, 5);
}

TEST(OpenAiParse, ChatTools) {
  // The tools keep the client's key order (from the raw text); a tool-calling turn has no
  // content; a tool message carries its call id.
  const std::string raw = R"({"messages":[{"role":"user","content":"Weather?"},
      {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
        "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
      {"role":"tool","tool_call_id":"call_1","name":"get_weather","content":"21"}],
      "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",
        "properties":{"city":{"type":"string"}},"required":["city"]}}}],
      "tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false})";
  const OpenAiRequest r = parse_chat_request(json::parse(raw), &raw);
  ASSERT_TRUE(r.tools);
  EXPECT_EQ(r.tools->choice, ToolRequest::Choice::kNamed);
  EXPECT_EQ(r.tools->named, "get_weather");
  EXPECT_FALSE(r.tools->parallel);
  ASSERT_EQ(r.tools->functions.size(), 1u);
  EXPECT_EQ(r.tools->functions[0].parameters.begin().key(), "type");  // not sorted ("properties" first)
  ASSERT_TRUE(r.input.tools);
  EXPECT_EQ(*r.input.tools, r.tools->tools_json);
  ASSERT_EQ(r.input.chat.size(), 3u);
  EXPECT_EQ(r.input.chat[1].content, "");
  ASSERT_TRUE(r.input.chat[1].tool_calls);
  EXPECT_EQ(json::parse(*r.input.chat[1].tool_calls)[0]["function"]["name"], "get_weather");
  EXPECT_EQ(r.input.chat[2].tool_call_id, "call_1");
  EXPECT_EQ(r.input.chat[2].name, "get_weather");

  // "none": the tools are read (and checked) but not shown to the template.
  json none = json::parse(raw);
  none["tool_choice"] = "none";
  const OpenAiRequest n = parse_chat_request(none);
  ASSERT_TRUE(n.tools);
  EXPECT_EQ(n.tools->choice, ToolRequest::Choice::kNone);
  EXPECT_FALSE(n.input.tools);
  // No tools, "auto": nothing to do.
  EXPECT_FALSE(parse_chat_request(json::parse(R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"auto"})")).tools);
}

TEST(OpenAiParse, Logprobs) {  // chat logprobs:true + top_logprobs N, completions logprobs N
  const json msgs = json::parse(R"([{"role":"user","content":"x"}])");
  EXPECT_FALSE(parse_chat_request(json{{"messages", msgs}}).input.logprobs);
  EXPECT_FALSE(parse_chat_request(json{{"messages", msgs}, {"logprobs", false}}).input.logprobs);
  EXPECT_TRUE(parse_chat_request(json{{"messages", msgs}, {"logprobs", true}}).input.logprobs);
  EXPECT_TRUE(parse_chat_request(json{{"messages", msgs}, {"logprobs", true}, {"top_logprobs", 0}}).input.logprobs);
  EXPECT_TRUE(
      parse_chat_request(json{{"messages", msgs}, {"logprobs", true}, {"top_logprobs", nullptr}}).input.logprobs);
  EXPECT_FALSE(parse_completion_request(json{{"prompt", "x"}}).input.logprobs);
  EXPECT_FALSE(parse_completion_request(json{{"prompt", "x"}, {"logprobs", nullptr}}).input.logprobs);
  EXPECT_TRUE(parse_completion_request(json{{"prompt", "x"}, {"logprobs", 0}}).input.logprobs);
  EXPECT_EQ(parse_chat_request(json{{"messages", msgs}, {"logprobs", true}}).input.top_logprobs, 0);
  EXPECT_EQ(parse_chat_request(json{{"messages", msgs}, {"logprobs", true}, {"top_logprobs", 3}}).input.top_logprobs, 3);
  EXPECT_EQ(parse_chat_request(json{{"messages", msgs}, {"logprobs", true}, {"top_logprobs", 20}}).input.top_logprobs, 20);
  const GenerateInput c = parse_completion_request(json{{"prompt", "x"}, {"logprobs", 5}}).input;
  EXPECT_TRUE(c.logprobs);
  EXPECT_EQ(c.top_logprobs, 5);
  EXPECT_EQ(parse_completion_request(json{{"prompt", "x"}, {"logprobs", 20}}).input.top_logprobs, 20);
  EXPECT_EQ(parse_completion_request(json{{"prompt", "x"}, {"logprobs", 0}}).input.top_logprobs, 0);
  const ApiError alone = refusal_of([&] { parse_chat_request(json{{"messages", msgs}, {"top_logprobs", 3}}); });
  EXPECT_EQ(alone.param, "top_logprobs");
  EXPECT_NE(alone.message.find("requires logprobs"), std::string::npos) << alone.message;
}

struct BadCase {
  const char* body;
  bool chat;
  const char* param;
  const char* code;
};

// Structured output compiles to the GBNF the sampler is held to; a schema keeps the client's
// property order when the raw body is given (nlohmann::json would sort "b" before "z").
TEST(OpenAiParse, StructuredOutput) {
  EXPECT_EQ(parse_completion_request(json{{"prompt", "x"}}).input.grammar, "");
  EXPECT_EQ(parse_completion_request(json{{"prompt", "x"}, {"grammar", "root ::= \"a\""}}).input.grammar, "root ::= \"a\"");
  const std::string any =
      parse_chat_request(json::parse(R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})"))
          .input.grammar;
  EXPECT_NE(any.find("root"), std::string::npos);
  EXPECT_EQ(parse_completion_request(json{{"prompt", "x"}, {"response_format", {{"type", "text"}}}}).input.grammar, "");
  const std::string raw =
      R"({"prompt":"x","response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object",)"
      R"("properties":{"z":{"type":"integer"},"b":{"type":"boolean"}},"required":["z","b"]}}}})";
  const std::string g = parse_completion_request(json::parse(raw), &raw).input.grammar;
  const std::string root = g.substr(g.find("root ::="));
  EXPECT_EQ(root.substr(0, root.find('\n')).find("z-kv \",\" space b-kv"), 19u) << g;
  // Without the raw text the keys come out sorted.
  EXPECT_NE(parse_completion_request(json::parse(raw)).input.grammar.find("b-kv \",\" space z-kv"), std::string::npos);
}

TEST(OpenAiParse, BadRequestsNamed) {
  const BadCase cases[] = {
      {R"({})", false, "prompt", "invalid_parameter"},
      {R"({"prompt":5})", false, "prompt", "invalid_parameter"},
      {R"({"prompt":[]})", false, "prompt", "invalid_parameter"},
      {R"({"prompt":["a","b"]})", false, "prompt", "unsupported_parameter"},
      {R"({"prompt":[1,"x"]})", false, "prompt", "invalid_parameter"},
      {R"({"prompt":"x","max_tokens":"ten"})", false, "max_tokens", "invalid_parameter"},
      {R"({"prompt":"x","max_tokens":0})", false, "max_tokens", "invalid_parameter"},
      {R"({"prompt":"x","max_tokens":1.5})", false, "max_tokens", "invalid_parameter"},
      {R"({"prompt":"x","temperature":"hot"})", false, "temperature", "invalid_parameter"},
      {R"({"prompt":"x","seed":-1})", false, "seed", "invalid_parameter"},
      {R"({"prompt":"x","stop":5})", false, "stop", "invalid_parameter"},
      {R"({"prompt":"x","stop":["a",3]})", false, "stop", "invalid_parameter"},
      {R"({"prompt":"x","n":2})", false, "n", "unsupported_parameter"},
      {R"({"prompt":"x","stream":"yes"})", false, "stream", "invalid_parameter"},
      {R"({"prompt":"x","ignore_eos":"yes"})", false, "ignore_eos", "invalid_parameter"},
      {R"({"prompt":"x","ignore_eos":1})", false, "ignore_eos", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"ignore_eos":"true"})", true, "ignore_eos", "invalid_parameter"},
      {R"({"prompt":"x","echo":true})", false, "echo", "unsupported_parameter"},
      {R"({"prompt":"x","logprobs":21})", false, "logprobs", "integer_above_max_value"},
      {R"({"prompt":"x","logprobs":-1})", false, "logprobs", "integer_below_min_value"},
      {R"({"prompt":"x","logprobs":true})", false, "logprobs", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21})", true, "top_logprobs",
       "integer_above_max_value"},
      {R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":1})", true, "top_logprobs",
       "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":-1})", true, "top_logprobs",
       "integer_below_min_value"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":"yes"})", true, "logprobs", "invalid_parameter"},
      {R"({"prompt":"x","logit_bias":{"1":5}})", false, "logit_bias", "unsupported_parameter"},
      {R"({})", true, "messages", "invalid_parameter"},
      {R"({"messages":"hi"})", true, "messages", "invalid_parameter"},
      {R"({"messages":[5]})", true, "messages", "invalid_parameter"},
      {R"({"messages":[{"content":"x"}]})", true, "messages", "invalid_parameter"},
      {R"({"messages":[{"role":1,"content":"x"}]})", true, "messages", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", true, "messages", "unsupported_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]})", true, "tools",
       "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":{"type":"function"}})", true, "tools", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"code","function":{"name":"f"}}]})", true, "tools",
       "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a b"}}]})", true,
       "tools", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}},
          {"type":"function","function":{"name":"f"}}]})", true, "tools", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f",
          "parameters":{"type":"array"}}}]})", true, "tools", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],
          "tool_choice":"sometimes"})", true, "tool_choice", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],
          "tool_choice":{"type":"function","function":{"name":"g"}}})", true, "tool_choice", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"required"})", true, "tool_choice", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],
          "parallel_tool_calls":1})", true, "parallel_tool_calls", "invalid_parameter"},
      {R"({"messages":[{"role":"user","content":"x","tool_calls":[]}]})", true, "messages", "invalid_parameter"},
      {R"({"messages":[{"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]}]})", true, "messages",
       "invalid_parameter"},
      {R"({"messages":[{"role":"tool","tool_call_id":7,"content":"x"}]})", true, "messages", "invalid_parameter"},
      {R"({"prompt":"x","tools":[{"type":"function","function":{"name":"f"}}]})", false, "tools", "unsupported_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}})", true,
       "response_format", "unsupported_parameter"},
      {R"({"messages":[{"role":"user","content":"x"}],"response_format":"json"})", true, "response_format",
       "invalid_parameter"},
      {R"({"prompt":"x","grammar":"root ::= ("})", false, "grammar", "invalid_parameter"},
      {R"({"prompt":"x","json_schema":{"type":"nope"}})", false, "json_schema", "invalid_parameter"},
      {R"({"prompt":"x","grammar":"root ::= \"a\"","ignore_eos":true})", false, "ignore_eos", "invalid_parameter"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body);
    const json body = json::parse(c.body);
    const ApiError e = refusal_of([&] { c.chat ? parse_chat_request(body) : parse_completion_request(body); });
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_EQ(e.param, c.param);
    EXPECT_EQ(e.code, c.code);
    EXPECT_NE(e.message.find(c.param), std::string::npos) << e.message;
  }
}

TEST(OpenAiParse, BodyMustBeJsonObject) {
  for (const char* b : {"", "{", "[1,2]", "\"x\"", "{\"prompt\":\"x\",}"}) {
    const ApiError e = refusal_of([&] { parse_body(b); });
    EXPECT_EQ(e.status, 400) << b;
    EXPECT_EQ(e.code, "invalid_json") << b;
  }
}

// Issue 21 item 11: a number a double cannot hold is blamed on its own field (it used to be
// blamed on `prompt` by a catch-all).
TEST(OpenAiParse, NumberOverflowNamesItsField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"prompt":"hi","temperature":1e309})", "temperature"},
      {R"({"prompt":"hi","max_tokens":-1e400})", "max_tokens"},
      {R"({"prompt":[1, 2, 1e999]})", "prompt"},
      {R"({"messages":[{"role":"user","content":"x"}],"top_p":1e309})", "top_p"},
      {R"({"a":{"b":{"c":1e309}}})", "a.b.c"},
  };
  for (const auto& [body, field] : cases) {
    const ApiError e = refusal_of([&] { parse_body(body); });
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, field) << body;
    EXPECT_EQ(e.message.rfind(field + ": number out of range", 0), 0u) << e.message;
  }
}

TEST(OpenAiErrors, StatusOfEachRefusal) {
  EXPECT_EQ(error_of_prepare(RequestError(Code::InvalidArgument, "sampling.top_p: must be in (0, 1]")).param, "top_p");
  const ApiError big = error_of_prepare(RequestError(Code::ResourceExhausted, "prompt.text: 9 bytes, more than ..."));
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(big.code, "prompt_too_large");
  const ApiError lng = error_of_prepare(RequestError(Code::ResourceExhausted, "prompt: 900 tokens, more than the limit"));
  EXPECT_EQ(lng.status, 400);
  EXPECT_EQ(lng.code, "prompt_too_long");
  const ApiError ctx = error_of_prepare(
      RequestError(Code::ResourceExhausted, "max_tokens: prompt (5 tokens) + max_tokens (600) exceed the context length 512"));
  EXPECT_EQ(ctx.code, "context_length_exceeded");
  EXPECT_EQ(ctx.param, "max_tokens");
  const ApiError over = error_of_prepare(RequestError(Code::ResourceExhausted, "max_tokens: 99 is over the server's limit of 8"));
  EXPECT_EQ(over.code, "max_tokens_over_limit");
  const ApiError full = error_of_submit(RequestError(Code::ResourceExhausted, "the request queue is full"));
  EXPECT_EQ(full.status, 429);
  EXPECT_EQ(full.code, "queue_full");
  const ApiError down = error_of_submit(RequestError(Code::Unavailable, "the model stages are not available"));
  EXPECT_EQ(down.status, 503);
  EXPECT_EQ(down.code, "stages_unavailable");
  EXPECT_EQ(error_of_status(413).code, "body_too_large");
  EXPECT_EQ(error_of_status(404).code, "not_found");
  EXPECT_EQ(error_of_failure(Code::Internal, "boom").status, 500);
}

TEST(OpenAiShapes, ErrorShape) {
  const json j = error_json(bad_request("top_p", "top_p: bad"));
  ASSERT_TRUE(j.contains("error"));
  const json& e = j["error"];
  EXPECT_EQ(e.size(), 4u);
  EXPECT_EQ(e["message"], "top_p: bad");
  EXPECT_EQ(e["type"], "invalid_request_error");
  EXPECT_EQ(e["param"], "top_p");
  EXPECT_EQ(e["code"], "invalid_parameter");
  ApiError bare;
  bare.message = "m";
  const json b = error_json(bare)["error"];
  EXPECT_TRUE(b["param"].is_null());
  EXPECT_TRUE(b["code"].is_null());
}

const ResponseMeta kMeta{"cmpl-3", 1700000000, "tiny"};

void expect_envelope(const json& j, const char* object, const std::string& id) {
  EXPECT_EQ(j["id"], id);
  EXPECT_EQ(j["object"], object);
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "tiny");
  ASSERT_TRUE(j["choices"].is_array());
}

TEST(OpenAiShapes, Completion) {
  const json j = completion_json(kMeta, "hello", "length", {3, 4, 2});
  expect_envelope(j, "text_completion", "cmpl-3");
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["text"], "hello");
  EXPECT_EQ(c["index"], 0);
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", 3},
                              {"completion_tokens", 4},
                              {"total_tokens", 7},
                              {"prompt_tokens_details", {{"cached_tokens", 2}}}}));
}

TEST(OpenAiShapes, CompletionChunk) {
  const json j = completion_chunk_json(kMeta, "he", nullptr);
  expect_envelope(j, "text_completion", "cmpl-3");
  EXPECT_EQ(j["choices"][0]["text"], "he");
  EXPECT_TRUE(j["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(j.contains("usage"));
  EXPECT_EQ(completion_chunk_json(kMeta, "", "stop")["choices"][0]["finish_reason"], "stop");
}

TEST(OpenAiShapes, Chat) {
  const ResponseMeta m{"chatcmpl-9", 1700000000, "tiny"};
  const json j = chat_json(m, "Hi!", "stop", {10, 2});
  expect_envelope(j, "chat.completion", "chatcmpl-9");
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["message"], (json{{"role", "assistant"}, {"content", "Hi!"}}));
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 12);
}

TEST(OpenAiShapes, ChatChunks) {
  const ResponseMeta m{"chatcmpl-9", 1700000000, "tiny"};
  const json first = chat_chunk_json(m, std::string("assistant"), std::string(), nullptr);
  expect_envelope(first, "chat.completion.chunk", "chatcmpl-9");
  EXPECT_EQ(first["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const json mid = chat_chunk_json(m, std::nullopt, std::string("lo"), nullptr);
  EXPECT_EQ(mid["choices"][0]["delta"], (json{{"content", "lo"}}));
  const json last = chat_chunk_json(m, std::nullopt, std::nullopt, "length");
  EXPECT_TRUE(last["choices"][0]["delta"].is_object());
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  const json usage = usage_chunk_json(m, true, {5, 6, 0});
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 6);
  EXPECT_EQ(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

TEST(OpenAiShapes, LogprobsPassThrough) {  // null unless given; the object as given otherwise
  const json chat_lp = {{"content", json::array({{{"token", "Hi"}, {"logprob", -0.5}, {"bytes", {72, 105}},
                                                   {"top_logprobs", json::array()}}})}};
  EXPECT_EQ(chat_json(kMeta, "Hi", "stop", {1, 1}, chat_lp)["choices"][0]["logprobs"], chat_lp);
  EXPECT_EQ(chat_chunk_json(kMeta, std::nullopt, std::string("Hi"), nullptr, chat_lp)["choices"][0]["logprobs"], chat_lp);
  EXPECT_TRUE(chat_chunk_json(kMeta, std::nullopt, std::string("Hi"), nullptr)["choices"][0]["logprobs"].is_null());
  const json cmpl_lp = {{"tokens", {"Hi"}}, {"token_logprobs", {-0.5}}, {"top_logprobs", nullptr}, {"text_offset", {0}}};
  EXPECT_EQ(completion_json(kMeta, "Hi", "stop", {1, 1}, cmpl_lp)["choices"][0]["logprobs"], cmpl_lp);
  EXPECT_EQ(completion_chunk_json(kMeta, "Hi", nullptr, cmpl_lp)["choices"][0]["logprobs"], cmpl_lp);
}

TEST(OpenAiShapes, SseFraming) {
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_STREQ(sse_done(), "data: [DONE]\n\n");
  // Invalid UTF-8 is replaced, never thrown.
  EXPECT_NO_THROW(dump_json(json{{"t", std::string("\xff\xfe")}}));
}

}  // namespace
}  // namespace pipellm::coord

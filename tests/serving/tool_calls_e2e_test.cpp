// Tool calls through the HTTP front door of a real pipellm-coordinator: a random tiny model made
// with the Qwen3 vocabulary (whose GGUF carries Qwen3's chat template, Hermes <tool_call>
// syntax). tool_choice "required" / a named function holds the output to a call (grammar), so
// even random weights answer with one: message.tool_calls with arguments that parse and satisfy
// the schema, finish_reason "tool_calls"; the streamed deltas assemble into the same call; the
// call and the tool's result sent back render through the template (arguments as an object, the
// result as <tool_response>) and are answered.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;

const json kTools = json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
   "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "London", "Tokyo"]},
     "days": {"type": "integer", "minimum": 1, "maximum": 7}, "unit": {"enum": ["celsius", "fahrenheit"]}},
     "required": ["city"], "additionalProperties": false}}},
  {"type": "function", "function": {"name": "get_time", "description": "The time in a zone",
   "parameters": {"type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}}, "required": ["tz"],
     "additionalProperties": false}}}])");

// kTools' schemas checked by hand; "" when `args` satisfies `name`'s.
std::string violation(const std::string& name, const json& args) {
  if (!args.is_object()) return "arguments are not an object";
  if (name == "get_time") {
    if (args.size() != 1 || !args.contains("tz") || (args["tz"] != "UTC" && args["tz"] != "CET")) return "bad get_time " + args.dump();
    return "";
  }
  if (name != "get_weather") return "unknown function " + name;
  if (!args.contains("city")) return "no city";
  for (const auto& [k, v] : args.items()) {
    if (k == "city") {
      if (v != "Paris" && v != "London" && v != "Tokyo") return "bad city " + v.dump();
    } else if (k == "days") {
      if (!v.is_number_integer() || v.get<int>() < 1 || v.get<int>() > 7) return "bad days " + v.dump();
    } else if (k == "unit") {
      if (v != "celsius" && v != "fahrenheit") return "bad unit " + v.dump();
    } else {
      return "extra key " + k;
    }
  }
  return "";
}

json ask(uint64_t seed, const json& tool_choice) {
  return {{"messages", json::array({{{"role", "user"}, {"content", "What is the weather in Paris?"}}})},
          {"tools", kTools},
          {"tool_choice", tool_choice},
          {"parallel_tool_calls", false},
          {"max_tokens", 200},
          {"temperature", 1.0},
          {"top_k", 0},
          {"seed", seed}};
}

class HttpToolCalls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // One file per process: ctest runs each test of the suite as its own process, at once.
    model_ = ::testing::TempDir() + "/pipellm_tool_calls_qwen3_" + std::to_string(::getpid()) + ".gguf";
    const std::string cmd = std::string(PIPELLM_CLI_BIN) + " mkmodel --preset tiny --quant Q8_0 --vocab " +
                            PIPELLM_TESTDATA + "/vocab/vocab-qwen3.gguf " + model_ + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    srv_ = new ServingProcess({"--model", model_, "--backend", "inprocess", "--ctx", "1024", "--slots", "2", "--threads", "1"});
  }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
    std::remove(model_.c_str());
  }
  void TearDown() override {
    if (HasFailure() && srv_ != nullptr) std::cerr << "coordinator log:\n" << srv_->log() << std::endl;
  }
  static ServingProcess* srv_;
  static std::string model_;
};
ServingProcess* HttpToolCalls::srv_ = nullptr;
std::string HttpToolCalls::model_;

TEST_F(HttpToolCalls, RequiredCallsParseAndValidate) {
  auto c = srv_->http();
  const json named = {{"type", "function"}, {"function", {{"name", "get_time"}}}};
  for (const json& choice : {json("required"), named}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      const std::string what = choice.dump() + " seed " + std::to_string(seed);
      int status = 0;
      const json r = post_json(*c, "/v1/chat/completions", ask(seed, choice), &status);
      ASSERT_EQ(status, 200) << what << ": " << r.dump();
      const json& ch = r["choices"][0];
      EXPECT_EQ(ch["finish_reason"], "tool_calls") << what << ": " << r.dump();
      EXPECT_TRUE(ch["message"]["content"].is_null()) << r.dump();
      EXPECT_EQ(ch["message"]["role"], "assistant");
      const json& calls = ch["message"]["tool_calls"];
      ASSERT_TRUE(calls.is_array() && calls.size() == 1) << what << ": " << r.dump();
      const json& call = calls[0];
      EXPECT_EQ(call["type"], "function");
      EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u) << call.dump();
      const std::string name = call["function"]["name"].get<std::string>();
      if (choice.is_object()) {
        EXPECT_EQ(name, "get_time");
      }
      ASSERT_TRUE(call["function"]["arguments"].is_string()) << call.dump();
      const json args = json::parse(call["function"]["arguments"].get<std::string>(), nullptr, false);
      ASSERT_FALSE(args.is_discarded()) << what << ": arguments are not JSON: " << call.dump();
      EXPECT_EQ(violation(name, args), "") << what << ": " << call.dump();
      if (seed == 1) std::cout << "[ call     ] " << what << ": " << call["function"].dump() << "\n";
    }
  }
}

TEST_F(HttpToolCalls, StreamedDeltasAssembleTheSameCall) {
  auto c = srv_->http();
  const json req = ask(5, "required");
  int status = 0;
  const json whole = post_json(*c, "/v1/chat/completions", req, &status);
  ASSERT_EQ(status, 200) << whole.dump();
  const json& want = whole["choices"][0]["message"]["tool_calls"][0]["function"];

  json sreq = req;
  sreq["stream"] = true;
  auto r = c->Post("/v1/chat/completions", sreq.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto events = sse_payloads(r->body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  std::string id, name, arguments, finish, content;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json ev = json::parse(events[i]);
    const json& ch = ev["choices"][0];
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"].get<std::string>();
    const json& d = ch["delta"];
    if (d.contains("content") && d["content"].is_string()) content += d["content"].get<std::string>();
    if (!d.contains("tool_calls")) continue;
    for (const json& tc : d["tool_calls"]) {
      EXPECT_EQ(tc["index"], 0) << events[i];
      if (tc.contains("id")) id += tc["id"].get<std::string>();
      if (tc["function"].contains("name")) name += tc["function"]["name"].get<std::string>();
      if (tc["function"].contains("arguments")) arguments += tc["function"]["arguments"].get<std::string>();
    }
  }
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(content, "");  // a required call is all there is
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(name, want["name"].get<std::string>());
  EXPECT_EQ(arguments, want["arguments"].get<std::string>());  // same seed, same call

  // "auto" and a text answer (random weights): the streamed content is the whole content,
  // nothing lost where text was held back as a possible call.
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    json areq = ask(seed, "auto");
    areq["max_tokens"] = 24;
    const json a = post_json(*c, "/v1/chat/completions", areq, &status);
    ASSERT_EQ(status, 200) << a.dump();
    if (a["choices"][0]["message"].contains("tool_calls")) continue;  // a random call is fine too
    areq["stream"] = true;
    auto s = c->Post("/v1/chat/completions", areq.dump(), "application/json");
    ASSERT_TRUE(s);
    std::string streamed;
    for (const std::string& ev : sse_payloads(s->body)) {
      if (ev == "[DONE]") continue;
      const json d = json::parse(ev)["choices"][0]["delta"];
      if (d.contains("content")) streamed += d["content"].get<std::string>();
    }
    EXPECT_EQ(streamed, a["choices"][0]["message"]["content"].get<std::string>()) << "seed " << seed;
  }
}

TEST_F(HttpToolCalls, ToolResultFollowUpRendersAndAnswers) {
  auto c = srv_->http();
  int status = 0;
  const json first = post_json(*c, "/v1/chat/completions", ask(2, "required"), &status);
  ASSERT_EQ(status, 200) << first.dump();
  const json msg = first["choices"][0]["message"];
  const json& call = msg["tool_calls"][0];

  json follow = ask(2, "auto");
  follow["max_tokens"] = 8;
  follow["messages"].push_back(msg);  // content null, tool_calls as returned
  follow["messages"].push_back({{"role", "tool"}, {"tool_call_id", call["id"]}, {"content", "{\"sky\": \"clear\", \"celsius\": 21}"}});
  const json r = post_json(*c, "/v1/chat/completions", follow, &status);
  ASSERT_EQ(status, 200) << r.dump();
  const std::string finish = r["choices"][0]["finish_reason"].get<std::string>();
  EXPECT_TRUE(finish == "stop" || finish == "length" || finish == "tool_calls") << r.dump();

  // The prompt: the tools listed, the call written by the template with its arguments as an
  // object (not a quoted string), the result as the template's tool response.
  const json p = post_json(*c, "/apply-template", follow, &status);
  ASSERT_EQ(status, 200) << p.dump();
  const std::string prompt = p["prompt"].get<std::string>();
  const std::string call_text = "<tool_call>\n{\"name\": \"" + call["function"]["name"].get<std::string>() +
                                "\", \"arguments\": " +
                                json::parse(call["function"]["arguments"].get<std::string>()).dump(-1, ' ', false) + "}";
  EXPECT_NE(prompt.find("<tools>\n{"), std::string::npos) << prompt;
  EXPECT_NE(prompt.find("\"name\": \"get_time\", \"parameters\""), std::string::npos) << prompt;
  EXPECT_NE(prompt.find("<tool_response>\n{\"sky\": \"clear\", \"celsius\": 21}\n</tool_response>"), std::string::npos)
      << prompt;
  EXPECT_NE(prompt.find("<tool_call>\n{\"name\": \"" + call["function"]["name"].get<std::string>() + "\", \"arguments\": {"),
            std::string::npos)
      << prompt << "\nwanted " << call_text;

  // tool_choice "none": the tools are not shown to the model, the answer is text.
  follow["tool_choice"] = "none";
  const json n = post_json(*c, "/apply-template", follow, &status);
  ASSERT_EQ(status, 200);
  EXPECT_EQ(n["prompt"].get<std::string>().find("<tools>"), std::string::npos);
  const json nr = post_json(*c, "/v1/chat/completions", follow, &status);
  ASSERT_EQ(status, 200) << nr.dump();
  EXPECT_TRUE(nr["choices"][0]["message"]["content"].is_string()) << nr.dump();
  EXPECT_FALSE(nr["choices"][0]["message"].contains("tool_calls")) << nr.dump();
}

TEST_F(HttpToolCalls, Refusals) {
  auto c = srv_->http();
  struct Case {
    json patch;
    const char* param;
  };
  const std::vector<Case> cases = {
      {{{"tools", json::array({{{"type", "function"}, {"function", {{"name", "bad name"}}}}})}}, "tools"},
      {{{"tool_choice", {{"type", "function"}, {"function", {{"name", "nope"}}}}}}, "tool_choice"},
      // A required call is a grammar already.
      {{{"response_format", {{"type", "json_object"}}}}, "tool_choice"},
      // A schema the grammar cannot express, only when a call is required.
      {{{"tools", json::array({{{"type", "function"},
                                {"function", {{"name", "f"}, {"parameters", {{"type", "object"},
                                                                               {"properties", {{"x", {{"type", "frob"}}}}}}}}}}})}},
       "tools"},
  };
  for (const Case& k : cases) {
    json b = ask(1, "required");
    b.update(k.patch);
    int status = 0;
    const json r = post_json(*c, "/v1/chat/completions", b, &status);
    EXPECT_EQ(status, 400) << k.patch.dump() << ": " << r.dump();
    EXPECT_EQ(r["error"]["param"], k.param) << r.dump();
  }
}

}  // namespace
}  // namespace pipellm::test

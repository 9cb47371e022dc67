// Structured output through the HTTP front door of a real pipellm-coordinator (in-process CPU
// backend, tiny model): `response_format` (json_schema, json_object), llama-server's
// `json_schema` and `grammar` on /v1/completions and /v1/chat/completions, sampled at
// temperature 1 with several seeds; every output must parse and match. Bad grammars and schemas
// are a 400 naming the field. The gRPC door's grammar / json_schema fields too.
#include <gtest/gtest.h>

#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;
namespace v1 = pipellm::v1;
using ojson = nlohmann::ordered_json;
constexpr const char* kModel = "tiny-llama-Q8_0";

// Bounded everywhere (string and array lengths, integer range), so the grammar must end well
// within max_tokens. "name" before "age": the output keeps the schema's order, not sorted keys.
constexpr const char* kSchema =
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":6},"age":{"type":"integer","minimum":0,"maximum":120},
        "ok":{"type":"boolean"},"tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":2}},
        "required":["name","age"],"additionalProperties":false})";

// kSchema's rules, checked by hand; "" when `v` matches.
std::string schema_violation(const json& v) {
  if (!v.is_object()) return "not an object";
  for (const auto& [k, x] : v.items()) {
    if (k == "name") {
      if (!x.is_string()) return "name is not a string";
      // maxLength counts code points
      size_t cps = 0;
      for (unsigned char c : x.get<std::string>()) cps += (c & 0xC0) != 0x80;
      if (cps > 6) return "name is longer than 6";
    } else if (k == "age") {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > 120) return "age is not an integer in [0, 120]";
    } else if (k == "ok") {
      if (!x.is_boolean()) return "ok is not a boolean";
    } else if (k == "tags") {
      if (!x.is_array() || x.size() > 2) return "tags is not an array of at most 2";
      for (const auto& t : x) {
        if (t != "a" && t != "b") return "tags has " + t.dump();
      }
    } else {
      return "extra key " + k;
    }
  }
  if (!v.contains("name") || !v.contains("age")) return "name or age missing";
  return "";
}

// POSTs `body` as written (ordered keys); the reply parsed, its status in `status`.
json post_ordered(httplib::Client& c, const std::string& path, const ojson& body, int* status) {
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  if (!r) {
    ADD_FAILURE() << path << ": no response (" << httplib::to_string(r.error()) << ")";
    return json();
  }
  *status = r->status;
  return json::parse(r->body, nullptr, false);
}

ojson request(bool chat, uint64_t seed) {
  ojson b;
  if (chat) {
    b["messages"] = ojson::array({{{"role", "user"}, {"content", "Describe a person in JSON."}}});
  } else {
    b["prompt"] = "Answer in JSON:";
  }
  b["max_tokens"] = 300;
  b["temperature"] = 1.0;
  b["top_k"] = 0;
  b["seed"] = seed;
  return b;
}

std::string output_of(const json& reply, bool chat) {
  const json& ch = reply["choices"][0];
  return chat ? ch["message"]["content"].get<std::string>() : ch["text"].get<std::string>();
}

class HttpStructuredOutput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    srv_ = new ServingProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "512", "--slots", "4",
                               "--threads", "1"});
  }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "coordinator log:\n" << srv_->log() << std::endl;
  }
  static ServingProcess* srv_;
};
ServingProcess* HttpStructuredOutput::srv_ = nullptr;

TEST_F(HttpStructuredOutput, SchemaOutputsParseAndValidate) {
  auto c = srv_->http();
  const ojson schema = ojson::parse(kSchema);
  for (const bool chat : {false, true}) {
    for (const char* how : {"response_format", "json_schema"}) {
      for (uint64_t seed = 1; seed <= 4; ++seed) {
        ojson b = request(chat, seed);
        if (std::string(how) == "response_format") {
          b["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "person"}, {"schema", schema}}}};
        } else {
          b["json_schema"] = schema;
        }
        const std::string what = std::string(chat ? "chat" : "completion") + " " + how + " seed " + std::to_string(seed);
        int status = 0;
        const json r = post_ordered(*c, chat ? "/v1/chat/completions" : "/v1/completions", b, &status);
        ASSERT_EQ(status, 200) << what << ": " << r.dump();
        const std::string text = output_of(r, chat);
        EXPECT_EQ(r["choices"][0]["finish_reason"], "stop") << what << ": " << text;
        const json v = json::parse(text, nullptr, false);
        ASSERT_FALSE(v.is_discarded()) << what << ": not JSON: " << text;
        EXPECT_EQ(schema_violation(v), "") << what << ": " << text;
        EXPECT_LT(text.find("\"name\""), text.find("\"age\"")) << what << ": properties out of the schema's order: " << text;
        if (seed == 1) std::cout << "[ output   ] " << what << ": " << json(text).dump() << "\n";
      }
    }
  }
}

TEST_F(HttpStructuredOutput, JsonObjectAndGrammar) {
  auto c = srv_->http();
  // A GBNF grammar: a JSON array of one to three "yes"/"no"/digits.
  const std::string gbnf = "root ::= \"[\" item (\",\" item)? (\",\" item)? \"]\"\n"
                           "item ::= \"\\\"yes\\\"\" | \"\\\"no\\\"\" | [0-9]\n";
  for (const bool chat : {false, true}) {
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      const std::string what = std::string(chat ? "chat" : "completion") + " seed " + std::to_string(seed);
      ojson g = request(chat, seed);
      g["grammar"] = gbnf;
      int status = 0;
      json r = post_ordered(*c, chat ? "/v1/chat/completions" : "/v1/completions", g, &status);
      ASSERT_EQ(status, 200) << what << ": " << r.dump();
      std::string text = output_of(r, chat);
      json v = json::parse(text, nullptr, false);
      ASSERT_TRUE(v.is_array()) << what << ": grammar output " << text;
      EXPECT_GE(v.size(), 1u);
      EXPECT_LE(v.size(), 3u);
      for (const auto& x : v) {
        EXPECT_TRUE(x == "yes" || x == "no" || (x.is_number_integer() && x.get<int>() >= 0 && x.get<int>() <= 9)) << text;
      }

      // json_object: any JSON; unbounded, so only a complete output is checked.
      ojson o = request(chat, seed);
      o["max_tokens"] = 64;
      o["response_format"] = {{"type", "json_object"}};
      r = post_ordered(*c, chat ? "/v1/chat/completions" : "/v1/completions", o, &status);
      ASSERT_EQ(status, 200) << what << ": " << r.dump();
      text = output_of(r, chat);
      if (r["choices"][0]["finish_reason"] == "stop") {
        EXPECT_FALSE(json::parse(text, nullptr, false).is_discarded()) << what << ": json_object output " << text;
      }
    }
  }
  // "text": no constraint, an ordinary completion.
  ojson t = request(false, 1);
  t["max_tokens"] = 4;
  t["response_format"] = {{"type", "text"}};
  int status = 0;
  const json r = post_ordered(*c, "/v1/completions", t, &status);
  EXPECT_EQ(status, 200) << r.dump();
}

// The gRPC door carries the same constraint (GenerateRequest.grammar / json_schema).
TEST_F(HttpStructuredOutput, GrpcGrammarAndJsonSchema) {
  auto run = [&](const std::function<void(v1::GenerateRequest&)>& set, uint64_t seed, grpc::Status* st) {
    v1::GenerateRequest req;
    req.set_text("Answer in JSON:");
    req.set_max_tokens(300);
    req.mutable_sampling()->set_temperature(1.0f);
    req.mutable_sampling()->set_top_k(0);
    req.mutable_sampling()->set_seed(seed);
    set(req);
    return grpc_text(srv_->stub(), req, st);
  };
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    grpc::Status st;
    const std::string yes_no = run([](v1::GenerateRequest& q) { q.set_grammar("root ::= (\"yes\" | \"no\") \"!\""); }, seed, &st);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_TRUE(yes_no == "yes!" || yes_no == "no!") << yes_no;
    const std::string person = run([](v1::GenerateRequest& q) { q.set_json_schema(kSchema); }, seed, &st);
    ASSERT_TRUE(st.ok()) << st.error_message();
    const json v = json::parse(person, nullptr, false);
    ASSERT_FALSE(v.is_discarded()) << person;
    EXPECT_EQ(schema_violation(v), "") << person;
  }
  grpc::Status st;
  run([](v1::GenerateRequest& q) { q.set_grammar("root ::= missing"); }, 1, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("grammar"), std::string::npos) << st.error_message();
  run([](v1::GenerateRequest& q) { q.set_json_schema("{not json"); }, 1, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("json_schema"), std::string::npos) << st.error_message();
}

TEST_F(HttpStructuredOutput, BadGrammarsAndSchemasAre400NamingTheField) {
  auto c = srv_->http();
  struct Case {
    const char* field;
    ojson value;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"grammar", "root ::= \"a\" | (", "grammar:"},
      {"grammar", 7, "grammar: must be a string"},
      {"json_schema", ojson::parse(R"({"type":"frobnicate"})"), "json_schema:"},
      {"json_schema", "not a schema", "json_schema: must be a JSON schema object"},
      {"response_format", ojson::parse(R"({"type":"json_schema","json_schema":{"schema":{"$ref":"http://x/y"}}})"),
       "response_format.json_schema.schema:"},
      {"response_format", ojson::parse(R"({"type":"json_schema"})"), "response_format.json_schema: missing"},
      {"response_format", ojson::parse(R"({"type":"xml"})"), "response_format.type:"},
  };
  for (const bool chat : {false, true}) {
    for (const Case& k : cases) {
      ojson b = request(chat, 1);
      b[k.field] = k.value;
      int status = 0;
      const json r = post_ordered(*c, chat ? "/v1/chat/completions" : "/v1/completions", b, &status);
      EXPECT_EQ(status, 400) << k.field << " " << k.value.dump() << ": " << r.dump();
      EXPECT_EQ(r["error"]["param"], k.field) << r.dump();
      EXPECT_NE(r["error"]["message"].get<std::string>().find(k.says), std::string::npos) << r.dump();
    }
  }
  // Two ways at once is ambiguous.
  ojson b = request(false, 1);
  b["grammar"] = "root ::= \"x\"";
  b["response_format"] = {{"type", "json_object"}};
  int status = 0;
  const json r = post_ordered(*c, "/v1/completions", b, &status);
  EXPECT_EQ(status, 400) << r.dump();
}

}  // namespace
}  // namespace pipellm::test

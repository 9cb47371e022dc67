// The HTTP front door of a real pipellm-coordinator (in-process CPU backend, tiny model) beside
// its gRPC front door: OpenAI shapes field by field, streaming reassembly equal to the
// non-streaming and gRPC text, 32 concurrent streams, bad requests, and (second suite) API
// keys, limits, queue-full and client disconnects on both front doors, the server serving on.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;
namespace v1 = pipellm::v1;
constexpr const char* kModel = "tiny-llama-Q8_0";


// The streamed text (and the parsed chunks) of a stream:true request.
struct Streamed {
  int status = 0;
  std::string text;
  std::vector<json> chunks;
  bool done = false;
  std::string finish;
  json usage;
};

Streamed post_stream(httplib::Client& c, const std::string& path, const json& body, const httplib::Headers& h = {}) {
  Streamed s;
  auto r = c.Post(path.c_str(), h, body.dump(), "application/json");
  if (!r) {
    ADD_FAILURE() << path << ": no response (" << httplib::to_string(r.error()) << ")";
    return s;
  }
  s.status = r->status;
  if (r->status != 200) return s;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const auto payloads = sse_payloads(r->body);
  for (size_t i = 0; i < payloads.size(); ++i) {
    if (payloads[i] == "[DONE]") {
      EXPECT_EQ(i + 1, payloads.size()) << "[DONE] must be last";
      s.done = true;
      break;
    }
    json j = json::parse(payloads[i], nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << payloads[i];
    if (j.contains("usage") && j["choices"].empty()) {
      s.usage = j["usage"];
      continue;
    }
    const json& ch = j["choices"][0];
    if (j["object"] == "chat.completion.chunk") {
      if (ch["delta"].contains("content")) s.text += ch["delta"]["content"].get<std::string>();
    } else {
      s.text += ch["text"].get<std::string>();
    }
    if (!ch["finish_reason"].is_null()) s.finish = ch["finish_reason"];
    s.chunks.push_back(std::move(j));
  }
  return s;
}

class Http : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    srv_ = new ServingProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "512", "--slots", "4",
                               "--threads", "1", "--max-body-bytes", "65536", "--max-queue", "64"});
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
ServingProcess* Http::srv_ = nullptr;

TEST_F(Http, HealthAndModels) {
  auto c = srv_->http();
  auto h = c->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto m = c->Get("/v1/models");
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  const json j = json::parse(m->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  const json& d = j["data"][0];
  EXPECT_TRUE(d["id"].is_string());
  EXPECT_FALSE(d["id"].get<std::string>().empty());
  EXPECT_EQ(d["object"], "model");
  EXPECT_TRUE(d["created"].is_number_integer());
  EXPECT_EQ(d["owned_by"], "pipellm");
  EXPECT_EQ(d["meta"]["context_length"], 512);
}

TEST_F(Http, CompletionShapeAndParityWithGrpc) {
  auto c = srv_->http();
  int status = 0;
  const json j = post_json(*c, "/v1/completions",
                           {{"model", "any"}, {"prompt", "Once upon a time"}, {"max_tokens", 12}, {"temperature", 0},
                            {"ignore_eos", true}},
                           &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j.size(), 7u) << j.dump();  // id object created model system_fingerprint choices usage
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_TRUE(j["model"].is_string());
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& ch = j["choices"][0];
  EXPECT_EQ(ch["index"], 0);
  EXPECT_TRUE(ch["text"].is_string());
  EXPECT_TRUE(ch["logprobs"].is_null());
  EXPECT_EQ(ch["finish_reason"], "length");
  const json tok = post_json(*c, "/tokenize", {{"content", "Once upon a time"}});
  EXPECT_EQ(j["usage"]["prompt_tokens"], tok["tokens"].size());
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<int>() + 12);
  EXPECT_EQ(ch["text"], grpc_text(srv_->stub(), grpc_request("Once upon a time", 0.0f, 0, 12)));
}

TEST_F(Http, ChatShapeAndSeededParity) {
  auto c = srv_->http();
  const json body = {{"messages", {{{"role", "system"}, {"content", "You are terse."}}, {{"role", "user"}, {"content", "Hello there"}}}},
                     {"max_tokens", 10}, {"temperature", 0.9}, {"seed", 7}, {"top_k", 20}};
  int status = 0;
  const json j = post_json(*c, "/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(j["object"], "chat.completion");
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& ch = j["choices"][0];
  EXPECT_EQ(ch["index"], 0);
  EXPECT_EQ(ch["message"]["role"], "assistant");
  EXPECT_TRUE(ch["message"]["content"].is_string());
  EXPECT_TRUE(ch["finish_reason"] == "stop" || ch["finish_reason"] == "length");
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 4);

  // Same seed, same text; over gRPC too.
  const json again = post_json(*c, "/v1/chat/completions", body);
  EXPECT_EQ(again["choices"][0]["message"]["content"], ch["message"]["content"]);
  v1::GenerateRequest g;
  auto* chat = g.mutable_chat();
  auto* m0 = chat->add_messages();
  m0->set_role("system");
  m0->set_content("You are terse.");
  auto* m1 = chat->add_messages();
  m1->set_role("user");
  m1->set_content("Hello there");
  g.mutable_sampling()->set_temperature(0.9f);
  g.mutable_sampling()->set_seed(7);
  g.mutable_sampling()->set_top_k(20);
  g.set_max_tokens(10);
  EXPECT_EQ(grpc_text(srv_->stub(), g), ch["message"]["content"].get<std::string>());
}

TEST_F(Http, StreamingCompletionReassembles) {
  auto c = srv_->http();
  json body = {{"prompt", "The quick brown fox"}, {"max_tokens", 16}, {"temperature", 0.8}, {"seed", 11}, {"ignore_eos", true}};
  const json whole = post_json(*c, "/v1/completions", body);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  const Streamed s = post_stream(*c, "/v1/completions", body);
  ASSERT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.text, whole["choices"][0]["text"]);
  EXPECT_EQ(s.finish, "length");
  EXPECT_EQ(s.usage["completion_tokens"], 16);
  ASSERT_FALSE(s.chunks.empty());
  for (const json& ch : s.chunks) {
    EXPECT_EQ(ch["object"], "text_completion");
    EXPECT_EQ(ch["id"], s.chunks[0]["id"]);
    EXPECT_EQ(ch["choices"][0]["index"], 0);
    EXPECT_FALSE(ch.contains("usage"));
  }
  EXPECT_TRUE(s.chunks.back()["choices"][0]["text"] == "");
}

TEST_F(Http, StreamingChatChunks) {
  auto c = srv_->http();
  json body = {{"messages", {{{"role", "user"}, {"content", "Tell me a story"}}}}, {"max_tokens", 12}, {"temperature", 0.7},
               {"seed", 3}, {"stream", true}};
  const Streamed s = post_stream(*c, "/v1/chat/completions", body);
  ASSERT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  ASSERT_GE(s.chunks.size(), 2u);
  EXPECT_EQ(s.chunks[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(s.usage.is_null());  // not asked for
  for (size_t i = 0; i < s.chunks.size(); ++i) {
    EXPECT_EQ(s.chunks[i]["object"], "chat.completion.chunk");
    if (i > 0) {
      EXPECT_FALSE(s.chunks[i]["choices"][0]["delta"].contains("role"));
    }
  }
  EXPECT_TRUE(s.chunks.back()["choices"][0]["delta"].empty());
  body.erase("stream");
  EXPECT_EQ(post_json(*c, "/v1/chat/completions", body)["choices"][0]["message"]["content"], s.text);
}

TEST_F(Http, StopStringEndsWithStop) {
  auto c = srv_->http();
  const json base = post_json(*c, "/v1/completions", {{"prompt", "abc def"}, {"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}});
  const std::string text = base["choices"][0]["text"];
  ASSERT_GE(text.size(), 6u);
  const std::string stop = text.substr(3, 2);
  const json j = post_json(*c, "/v1/completions",
                           {{"prompt", "abc def"}, {"max_tokens", 24}, {"temperature", 0}, {"stop", stop}, {"ignore_eos", true}});
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["text"], text.substr(0, text.find(stop)));
}

TEST_F(Http, ThirtyTwoConcurrentStreams) {
  constexpr int kN = 32;
  std::vector<Streamed> results(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      auto c = srv_->http();
      const bool chat = i % 2 == 1;
      json body = {{"max_tokens", 8 + i % 5}, {"temperature", i % 3 == 0 ? 0.0 : 0.8}, {"seed", 100 + i},
                   {"stream", true}, {"ignore_eos", true}};
      if (chat) {
        body["messages"] = {{{"role", "user"}, {"content", "request number " + std::to_string(i)}}};
      } else {
        body["prompt"] = "request number " + std::to_string(i);
      }
      results[i] = post_stream(*c, chat ? "/v1/chat/completions" : "/v1/completions", body);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kN; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(results[i].status, 200);
    EXPECT_TRUE(results[i].done);
    EXPECT_EQ(results[i].finish, "length");
  }
}

TEST_F(Http, TokenizeDetokenize) {
  auto c = srv_->http();
  const json t = post_json(*c, "/tokenize", {{"content", "Hello world"}, {"with_pieces", true}});
  ASSERT_TRUE(t["tokens"].is_array());
  ASSERT_FALSE(t["tokens"].empty());
  std::vector<int> ids;
  for (const auto& x : t["tokens"]) {
    EXPECT_TRUE(x["id"].is_number_integer());
    EXPECT_TRUE(x["piece"].is_string());
    ids.push_back(x["id"]);
  }
  const json plain = post_json(*c, "/tokenize", {{"content", "Hello world"}, {"add_special", false}});
  const json d = post_json(*c, "/detokenize", {{"tokens", plain["tokens"]}});
  EXPECT_EQ(d["content"], "Hello world");
  const json chat = post_json(*c, "/tokenize", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_GT(chat["tokens"].size(), 1u);
}

struct BadHttp {
  const char* path;
  std::string body;
  int status;
  const char* code;
};

TEST_F(Http, BadRequestsGetOpenAiErrors) {
  const std::string big(70000, 'x');
  const BadHttp cases[] = {
      {"/v1/completions", "{not json", 400, "invalid_json"},
      {"/v1/completions", R"({"prompt":"x","top_p":1.5})", 400, "invalid_parameter"},
      {"/v1/completions", R"({"prompt":"x","temperature":-1})", 400, "invalid_parameter"},
      {"/v1/completions", R"({"prompt":"x","max_tokens":-3})", 400, "invalid_parameter"},
      {"/v1/completions", R"({"prompt":"x","n":3})", 400, "unsupported_parameter"},
      {"/v1/completions", R"({"prompt":[999999]})", 400, "invalid_parameter"},
      {"/v1/completions", R"({"prompt":""})", 400, "invalid_parameter"},
      {"/v1/completions", R"({"prompt":"x","max_tokens":600})", 400, "context_length_exceeded"},
      // The largest int64 must not wrap around in the prompt + max_tokens check.
      {"/v1/completions", R"({"prompt":"x","max_tokens":9223372036854775807})", 400, "context_length_exceeded"},
      {"/v1/chat/completions", R"({"messages":[]})", 400, "invalid_parameter"},
      {"/v1/chat/completions", R"({"messages":[{"role":"wizard","content":"x"}]})", 400, "invalid_parameter"},
      {"/v1/chat/completions", R"({"messages":[{"role":"user","content":""}]})", 400, "invalid_parameter"},
      {"/detokenize", R"({"tokens":[-1]})", 400, "invalid_parameter"},
      {"/tokenize", R"({})", 400, "invalid_parameter"},
      {"/v1/completions", "{\"prompt\":\"" + big + "\"}", 413, "body_too_large"},
      {"/v1/nothing", "{}", 404, "not_found"},
  };
  auto c = srv_->http();
  for (const auto& bc : cases) {
    SCOPED_TRACE(std::string(bc.path) + " " + bc.body.substr(0, 80));
    auto r = c->Post(bc.path, bc.body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, bc.status);
    const json j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r->body;
    ASSERT_TRUE(j.contains("error")) << r->body;
    EXPECT_EQ(j["error"]["code"], bc.code) << r->body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_TRUE(j["error"].contains("param"));
  }
  auto h = c->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);  // still serving
}

TEST_F(Http, MetricsParse) {
  auto c = srv_->http();
  post_json(*c, "/v1/completions", {{"prompt", "metrics"}, {"max_tokens", 4}});
  auto r = c->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/plain", 0), 0u);
  std::map<std::string, double> v;
  std::istringstream in(r->body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    v[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  EXPECT_EQ(v["pipellm_up"], 1);
  EXPECT_GT(v["pipellm_generated_tokens_total"], 3);
  EXPECT_GT(v["pipellm_prompt_tokens_total"], 0);
  EXPECT_GE(v["pipellm_time_to_first_token_seconds_count"], 1);
  EXPECT_GE(v["pipellm_inter_token_latency_seconds_count"], 3);
  EXPECT_GE(v["pipellm_requests_total{front_door=\"http\",route=\"/v1/completions\",status=\"200\"}"], 1);
  EXPECT_TRUE(v.count("pipellm_queue_depth"));
  EXPECT_TRUE(v.count("pipellm_active_sequences"));
}

// Prompt caching as a client sees it: a second turn that continues the first (token ids, so the
// shared prefix is exact) reports the first turn's prompt and its fed answer tokens as cached
// (llama-server's tokens_cached and timings.cache_n; OpenAI's usage.prompt_tokens_details), the
// counter on /metrics grows by as much, and cache_prompt false reports none.
TEST_F(Http, ANextTurnReportsItsCachedPrefix) {
  auto c = srv_->http();
  const auto metric = [&] {
    auto r = c->Get("/metrics");
    const std::string key = "\npipellm_prompt_tokens_cached_total ";
    const size_t at = r ? r->body.find(key) : std::string::npos;
    return at == std::string::npos ? -1.0 : std::stod(r->body.substr(at + key.size()));
  };
  const double before = metric();
  std::vector<int32_t> first = {1};  // 40 tokens: longer than the least prefix worth reusing (32)
  for (int i = 0; i < 39; ++i) first.push_back(100 + 17 * i);
  json a = post_json(*c, "/completion",
                     {{"prompt", first}, {"n_predict", 6}, {"temperature", 0}, {"ignore_eos", true}, {"return_tokens", true}});
  ASSERT_EQ(a["tokens"].size(), 6u) << a.dump();
  EXPECT_EQ(a["tokens_cached"], 0);
  std::vector<int32_t> next = first;
  for (const json& t : a["tokens"]) next.push_back(t.get<int32_t>());
  next.insert(next.end(), {338, 554, 889});
  json b = post_json(*c, "/completion", {{"prompt", next}, {"n_predict", 2}, {"temperature", 0}, {"ignore_eos", true}});
  // The slot holds the first prompt and the answer but its last token (sampled, never fed).
  const int cached = static_cast<int>(first.size()) + 5;
  EXPECT_EQ(b["tokens_cached"], cached) << b.dump();
  EXPECT_EQ(b["timings"]["cache_n"], cached);
  EXPECT_EQ(b["timings"]["prompt_n"], static_cast<int>(next.size()) - cached);
  EXPECT_EQ(metric(), before + cached);
  const json o = post_json(*c, "/v1/completions", {{"prompt", next}, {"max_tokens", 2}, {"temperature", 0}});
  EXPECT_EQ(o["usage"]["prompt_tokens_details"]["cached_tokens"], static_cast<int>(next.size()) - 1) << o.dump();
  const json f = post_json(*c, "/v1/completions",
                           {{"prompt", next}, {"max_tokens", 2}, {"temperature", 0}, {"cache_prompt", false}});
  EXPECT_EQ(f["usage"]["prompt_tokens_details"]["cached_tokens"], 0) << f.dump();
  // gRPC's Usage says the same.
  v1::GenerateRequest g;
  g.mutable_tokens()->mutable_ids()->Assign(next.begin(), next.end());
  g.set_max_tokens(2);
  grpc::ClientContext ctx;
  auto reader = srv_->stub().Generate(&ctx, g);
  v1::GenerateResponse resp;
  int cached_grpc = -1;
  while (reader->Read(&resp)) {
    if (resp.has_final()) cached_grpc = resp.final().usage().cached_tokens();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(cached_grpc, static_cast<int>(next.size()) - 1);
}

// ---- access control and limits: keys, per-key streams, queue, disconnects ----

class Guarded : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string keys = std::string(PIPELLM_TESTDATA) + "/../serving-keys.txt";
    std::ofstream(keys) << "# test keys\nkey-one\nkey-two\n";
    // One slot, one queued request, one stream per key; steps slowed so streams stay open.
    srv_ = new ServingProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "512", "--slots", "1",
                               "--threads", "1", "--max-queue", "1", "--api-keys-file", keys, "--max-streams-per-key",
                               "1", "--max-tokens-limit", "400", "--max-prompt-tokens", "64", "--max-body-bytes", "4096",
                               "--debug-step-delay-ms", "15"},
                              {"PIPELLM_API_KEYS=key-three"});
  }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "coordinator log:\n" << srv_->log() << std::endl;
  }
  static httplib::Headers bearer(const std::string& k) { return {{"Authorization", "Bearer " + k}}; }
  static double metric(const std::string& name) {
    auto c = srv_->http();
    auto r = c->Get("/metrics", bearer("key-one"));
    if (!r) return -1;
    std::istringstream in(r->body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    }
    return -1;
  }
  static bool wait_metric(const std::string& name, double want, int ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      if (metric(name) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  static void expect_serving() {
    auto c = srv_->http();
    int status = 0;
    const json j = post_json(*c, "/v1/completions", {{"prompt", "still there"}, {"max_tokens", 2}}, &status,
                             bearer("key-two"));
    EXPECT_EQ(status, 200) << j.dump();
  }
  static ServingProcess* srv_;
};
ServingProcess* Guarded::srv_ = nullptr;

TEST_F(Guarded, HttpKeys) {
  auto c = srv_->http();
  const json body = {{"prompt", "hi"}, {"max_tokens", 2}};
  int status = 0;
  json j = post_json(*c, "/v1/completions", body, &status);
  EXPECT_EQ(status, 401);
  EXPECT_EQ(j["error"]["code"], "missing_api_key");
  EXPECT_EQ(j["error"]["type"], "authentication_error");
  j = post_json(*c, "/v1/completions", body, &status, bearer("wrong-secret-123"));
  EXPECT_EQ(status, 401);
  EXPECT_EQ(j["error"]["code"], "invalid_api_key");
  j = post_json(*c, "/v1/completions", body, &status, {{"Authorization", "key-one"}});
  EXPECT_EQ(status, 401);
  auto m = c->Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 401);
  auto h = c->Get("/health");  // open to probes
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  for (const char* k : {"key-one", "key-two", "key-three"}) {
    j = post_json(*c, "/v1/completions", body, &status, bearer(k));
    EXPECT_EQ(status, 200) << k << " " << j.dump();
  }
  EXPECT_EQ(srv_->log().find("wrong-secret-123"), std::string::npos) << "a key was logged";
  EXPECT_NE(srv_->log().find("invalid_api_key"), std::string::npos) << "the refusal was not logged";
}

// A request refused before its body is read (401 here) must not leave the body to be read as
// the next request of a kept-alive connection (the OpenAI SDKs reuse connections).
TEST_F(Guarded, ARefusedBodyDoesNotPoisonAKeptAliveConnection) {
  auto c = srv_->http();
  c->set_keep_alive(true);
  const json body = {{"prompt", "hi"}, {"max_tokens", 2}};
  for (int i = 0; i < 3; ++i) {
    int status = 0;
    post_json(*c, "/v1/completions", body, &status, bearer("wrong-secret-789"));
    EXPECT_EQ(status, 401);
    const json j = post_json(*c, "/v1/completions", body, &status, bearer("key-one"));
    EXPECT_EQ(status, 200) << j.dump();
  }
}

TEST_F(Guarded, GrpcKeys) {
  const auto req = grpc_request("hi", 0.0f, 0, 2);
  grpc::Status st;
  grpc_text(srv_->stub(), req, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc_text(srv_->stub(), req, &st, "wrong-secret-456");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(st.error_message().find("wrong-secret-456"), std::string::npos);
  grpc_text(srv_->stub(), req, &st, "key-two");
  EXPECT_TRUE(st.ok()) << st.error_message();
  {
    grpc::ClientContext ctx;
    v1::TokenizeRequest tr;
    tr.set_text("hello");
    v1::TokenizeResponse out;
    EXPECT_EQ(srv_->stub().Tokenize(&ctx, tr, &out).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(srv_->log().find("wrong-secret-456"), std::string::npos) << "a key was logged";
}

TEST_F(Guarded, OverLimitOnBothDoors) {
  auto c = srv_->http();
  int status = 0;
  json j = post_json(*c, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 401}}, &status, bearer("key-one"));
  EXPECT_EQ(status, 400);
  EXPECT_EQ(j["error"]["code"], "max_tokens_over_limit");
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "word ";
  j = post_json(*c, "/v1/completions", {{"prompt", long_prompt}, {"max_tokens", 2}}, &status, bearer("key-one"));
  EXPECT_EQ(status, 400);
  EXPECT_EQ(j["error"]["code"], "prompt_too_long");
  j = post_json(*c, "/v1/completions", {{"prompt", std::string(5000, 'a')}}, &status, bearer("key-one"));
  EXPECT_EQ(status, 413);
  EXPECT_EQ(j["error"]["code"], "body_too_large");

  grpc::Status st;
  grpc_text(srv_->stub(), grpc_request("x", 0, 0, 401), &st, "key-one");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  grpc_text(srv_->stub(), grpc_request(long_prompt, 0, 0, 2), &st, "key-one");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  grpc_text(srv_->stub(), grpc_request(std::string(5000, 'a'), 0, 0, 2), &st, "key-one");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  expect_serving();
}

TEST_F(Guarded, StreamsPerKeyAndQueueFull) {
  // key-one holds the only slot with a long stream; key-two waits in the one queue place.
  std::atomic<int> first_status{0}, second_status{0};
  std::thread first([&] {
    auto c = srv_->http();
    first_status = post_stream(*c, "/v1/completions",
                               {{"prompt", "long"}, {"max_tokens", 150}, {"ignore_eos", true}, {"stream", true}},
                               bearer("key-one"))
                       .status;
  });
  ASSERT_TRUE(wait_metric("pipellm_active_sequences", 1, 10000));
  std::thread second([&] {
    auto c = srv_->http();
    int s = 0;
    post_json(*c, "/v1/completions", {{"prompt", "queued"}, {"max_tokens", 2}}, &s, bearer("key-two"));
    second_status = s;
  });
  ASSERT_TRUE(wait_metric("pipellm_queue_depth", 1, 10000));

  auto c = srv_->http();
  int status = 0;
  json j = post_json(*c, "/v1/completions", {{"prompt", "again"}, {"max_tokens", 2}}, &status, bearer("key-one"));
  EXPECT_EQ(status, 429);
  EXPECT_EQ(j["error"]["code"], "too_many_streams");
  grpc::Status st;
  grpc_text(srv_->stub(), grpc_request("again", 0, 0, 2), &st, "key-one");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("too_many_streams"), std::string::npos) << st.error_message();

  j = post_json(*c, "/v1/completions", {{"prompt", "third"}, {"max_tokens", 2}}, &status, bearer("key-three"));
  EXPECT_EQ(status, 429);
  EXPECT_EQ(j["error"]["code"], "queue_full");
  grpc_text(srv_->stub(), grpc_request("third", 0, 0, 2), &st, "key-three");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  first.join();
  second.join();
  EXPECT_EQ(first_status, 200);
  EXPECT_EQ(second_status, 200);
  expect_serving();
}

TEST_F(Guarded, DisconnectMidStreamFreesTheSequence) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(srv_->http_port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string body = R"({"prompt":"forever","max_tokens":400,"ignore_eos":true,"stream":true})";
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer key-one\r\n"
                          "Content-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  // Read until a few chunks have arrived, then hang up.
  std::string got;
  char buf[4096];
  while (got.find("data: ", got.find("data: ", got.find("data: ") + 1) + 1) == std::string::npos) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(metric("pipellm_active_sequences"), 1);
  ::close(fd);
  // 400 tokens at >= 15 ms each would take 6 s; the slot must come back well before.
  EXPECT_TRUE(wait_metric("pipellm_active_sequences", 0, 3000));
  expect_serving();
}

}  // namespace
}  // namespace pipellm::test

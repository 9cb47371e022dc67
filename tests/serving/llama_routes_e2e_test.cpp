// llama-server's routes on a real pipellm-coordinator (in-process CPU backend, tiny model),
// checked against the same server's OpenAI routes and gRPC door, which run the same request
// through the same generation path: /completion's text equals /v1/completions' and gRPC's for the
// same prompt and sampling, streamed chunks join to the whole content, n_predict is honoured
// (also -1: to the end of the context), stop words and grammars end the output as they should,
// /apply-template is the prompt the chat route runs, /props and /slots describe the configured
// server, /v1/models/{id} and the 404/405/401 shapes. Last, /health says "Loading model" (503,
// llama-server's shape) while a door's backend has never come up.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/version.h"
#include "coordinator/http_infill.h"
#include "coordinator/http_server.h"
#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;
namespace v1 = pipellm::v1;
constexpr const char* kModel = "tiny-llama-Q8_0";
constexpr int kCtx = 512;
constexpr int kSlots = 4;

// A /completion stream: its events, the content of the partial ones joined, the final object.
struct LlamaStream {
  int status = 0;
  std::string content;
  std::vector<int32_t> tokens;  // every event's `tokens`, in order
  size_t partials = 0;
  json last;
  bool done_marker = false;  // an OpenAI "[DONE]" (llama-server sends none)
  bool partial_after_last = false;
};

LlamaStream post_stream(httplib::Client& c, json body) {
  body["stream"] = true;
  LlamaStream s;
  auto r = c.Post("/completion", body.dump(), "application/json");
  if (!r) {
    ADD_FAILURE() << "/completion: no response (" << httplib::to_string(r.error()) << ")";
    return s;
  }
  s.status = r->status;
  if (r->status != 200) return s;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  for (const std::string& p : sse_payloads(r->body)) {
    if (p == "[DONE]") {
      s.done_marker = true;
      continue;
    }
    const json j = json::parse(p, nullptr, false);
    EXPECT_TRUE(j.is_object()) << p;
    if (!j.is_object()) continue;
    for (const auto& t : j.value("tokens", json::array())) s.tokens.push_back(t.get<int32_t>());
    if (j.value("stop", false)) {
      EXPECT_TRUE(s.last.is_null()) << "two final objects";
      s.last = j;
    } else {
      if (!s.last.is_null()) s.partial_after_last = true;
      ++s.partials;
      s.content += j["content"].get<std::string>();
    }
  }
  return s;
}


// The greedy, ignore_eos /completion body.
json greedy(const std::string& prompt, int n) {
  return {{"prompt", prompt}, {"n_predict", n}, {"temperature", 0}, {"ignore_eos", true}};
}

std::string error_code(const json& j) { return j.contains("error") ? j["error"].value("code", "") : ""; }

class LlamaRoutes : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    srv_ = new ServingProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", std::to_string(kCtx),
                               "--slots", std::to_string(kSlots), "--threads", "1"});
  }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "coordinator log:\n" << srv_->log() << std::endl;
  }
  // POST /completion; the reply, its status checked.
  static json completion(httplib::Client& c, const json& body, int want = 200) {
    int status = 0;
    json r = post_json(c, "/completion", body, &status);
    EXPECT_EQ(status, want) << body.dump() << " -> " << r.dump();
    return r;
  }
  static std::string served_id(httplib::Client& c) {
    auto m = c.Get("/v1/models");
    return m ? json::parse(m->body)["data"][0]["id"].get<std::string>() : "";
  }
  static ServingProcess* srv_;
};
ServingProcess* LlamaRoutes::srv_ = nullptr;

TEST_F(LlamaRoutes, CompletionTextEqualsV1CompletionsAndGrpc) {
  auto c = srv_->http();
  const std::string prompt = "The jury said";
  const std::string id = served_id(*c);
  for (const auto& [temp, seed] : std::vector<std::pair<float, uint64_t>>{{0.0f, 0}, {0.8f, 7}}) {
    SCOPED_TRACE("temperature " + std::to_string(temp) + " seed " + std::to_string(seed));
    const json l = completion(*c, {{"prompt", prompt}, {"n_predict", 16}, {"temperature", temp}, {"seed", seed},
                                   {"ignore_eos", true}, {"cache_prompt", true}, {"n_keep", -1}});
    int status = 0;
    const json o = post_json(*c, "/v1/completions",
                             {{"prompt", prompt}, {"max_tokens", 16}, {"temperature", temp}, {"seed", seed}, {"ignore_eos", true}},
                             &status);
    ASSERT_EQ(status, 200) << o.dump();
    const std::string text = o["choices"][0]["text"];
    EXPECT_EQ(l["content"], text);
    EXPECT_EQ(l["content"], grpc_text(srv_->stub(), grpc_request(prompt, temp, seed, 16)));
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(l["stop"], true);
    EXPECT_EQ(l["model"], id);
    EXPECT_EQ(l["tokens_predicted"], 16);
    EXPECT_EQ(l["tokens_evaluated"], o["usage"]["prompt_tokens"]);
    EXPECT_EQ(l["stop_type"], "limit");
    EXPECT_EQ(l["stopping_word"], "");
    EXPECT_EQ(l["tokens"], json::array());  // only with return_tokens
    const json& t = l["timings"];
    // The second run's prompt is in a slot's cache (all but its last token, fed again).
    EXPECT_EQ(t["prompt_n"].get<int>() + t["cache_n"].get<int>(), l["tokens_evaluated"].get<int>());
    EXPECT_EQ(t["cache_n"], l["tokens_cached"]);
    EXPECT_EQ(t["predicted_n"], 16);
    EXPECT_GE(t["prompt_ms"].get<double>(), 0.0);
    EXPECT_GT(t["predicted_ms"].get<double>(), 0.0);
    EXPECT_GT(t["predicted_per_second"].get<double>(), 0.0);
    const json& g = l["generation_settings"];
    EXPECT_EQ(g["n_ctx"], kCtx);
    EXPECT_EQ(g["n_predict"], 16);
    EXPECT_EQ(g["seed"], seed);
    EXPECT_FLOAT_EQ(g["temperature"].get<float>(), temp);
    EXPECT_EQ(g["ignore_eos"], true);
    EXPECT_EQ(g["stream"], false);
  }
  // Token ids as the prompt, and return_tokens: the ids are those of the text.
  json ids;
  {
    int status = 0;
    ids = post_json(*c, "/tokenize", {{"content", prompt}, {"add_special", true}}, &status)["tokens"];
  }
  json b = greedy("", 8);
  b["prompt"] = ids;
  b["return_tokens"] = true;
  const json l = completion(*c, b);
  EXPECT_EQ(l["content"], completion(*c, greedy(prompt, 8))["content"]);
  EXPECT_EQ(l["tokens_evaluated"], ids.size());
  ASSERT_EQ(l["tokens"].size(), 8u);
  int status = 0;
  EXPECT_EQ(post_json(*c, "/detokenize", {{"tokens", l["tokens"]}}, &status)["content"], l["content"]);
}

TEST_F(LlamaRoutes, StreamedChunksJoinToTheContent) {
  auto c = srv_->http();
  for (const auto& [temp, seed] : std::vector<std::pair<float, uint64_t>>{{0.0f, 0}, {0.8f, 3}}) {
    const json body = {{"prompt", "The jury said"}, {"n_predict", 24}, {"temperature", temp}, {"seed", seed}, {"ignore_eos", true}};
    const json whole = completion(*c, body);
    const LlamaStream s = post_stream(*c, body);
    ASSERT_EQ(s.status, 200);
    EXPECT_EQ(s.content, whole["content"]);
    EXPECT_GT(s.partials, 1u);
    EXPECT_FALSE(s.done_marker) << "llama-server ends a stream with stop:true, not [DONE]";
    EXPECT_FALSE(s.partial_after_last);
    ASSERT_TRUE(s.last.is_object());
    EXPECT_EQ(s.last["content"], "");  // the text went in the partial events
    EXPECT_EQ(s.last["tokens_predicted"], 24);
    EXPECT_EQ(s.last["stop_type"], "limit");
    EXPECT_EQ(s.last["generation_settings"]["stream"], true);
    EXPECT_EQ(s.tokens.size(), 24u);  // every generated id, each once
  }
}

TEST_F(LlamaRoutes, NPredictIsHonoured) {
  auto c = srv_->http();
  for (int n : {1, 5, 40}) {
    const json l = completion(*c, greedy("The jury said", n));
    EXPECT_EQ(l["tokens_predicted"], n);
    EXPECT_EQ(l["timings"]["predicted_n"], n);
    EXPECT_EQ(l["stop_type"], "limit");
  }
  // -1: to the end of the context.
  const json l = completion(*c, greedy("The jury said", -1));
  EXPECT_EQ(l["tokens_predicted"].get<int>() + l["tokens_evaluated"].get<int>(), kCtx);
  EXPECT_EQ(l["stop_type"], "limit");
  EXPECT_EQ(l["generation_settings"]["n_predict"], kCtx - l["tokens_evaluated"].get<int>());
  // Absent: the server's default (-n, llama-server's -1: to the end of the context).
  json d = greedy("The jury said", 1);
  d.erase("n_predict");
  const json a = completion(*c, d);
  EXPECT_EQ(a["tokens_predicted"].get<int>() + a["tokens_evaluated"].get<int>(), kCtx);
}

TEST_F(LlamaRoutes, StopWordEndsTheContent) {
  auto c = srv_->http();
  const std::string full = completion(*c, greedy("The jury said", 32))["content"];
  // A stop string of two printable ASCII characters from the middle of the greedy text.
  std::string stop;
  for (size_t i = full.size() / 3; i + 1 < full.size() && stop.empty(); ++i) {
    if (std::isalnum(static_cast<unsigned char>(full[i])) && std::isalnum(static_cast<unsigned char>(full[i + 1]))) {
      stop = full.substr(i, 2);
    }
  }
  ASSERT_FALSE(stop.empty()) << json(full).dump();
  json b = greedy("The jury said", 32);
  b["stop"] = json::array({stop});
  const json l = completion(*c, b);
  EXPECT_EQ(l["content"], full.substr(0, full.find(stop)));
  EXPECT_EQ(l["stop_type"], "word");
  EXPECT_EQ(l["stopping_word"], stop);
  EXPECT_LT(l["tokens_predicted"].get<int>(), 32);
  const LlamaStream s = post_stream(*c, b);
  EXPECT_EQ(s.content, l["content"]);
  EXPECT_EQ(s.last["stop_type"], "word");
}

TEST_F(LlamaRoutes, GrammarAndJsonSchemaOutputsParse) {
  auto c = srv_->http();
  const std::string gbnf = "root ::= \"[\" item (\",\" item)? (\",\" item)? \"]\"\n"
                           "item ::= \"\\\"yes\\\"\" | \"\\\"no\\\"\" | [0-9]\n";
  const json schema = json::parse(R"({"type":"object","properties":{"n":{"type":"integer","minimum":0,"maximum":9}},
      "required":["n"],"additionalProperties":false})");
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const std::string what = "seed " + std::to_string(seed);
    json b = {{"prompt", "Answer:"}, {"n_predict", 200}, {"temperature", 1.0}, {"top_k", 0}, {"seed", seed}, {"grammar", gbnf}};
    const json g = completion(*c, b);
    const json arr = json::parse(g["content"].get<std::string>(), nullptr, false);
    ASSERT_TRUE(arr.is_array()) << what << ": " << g["content"];
    EXPECT_GE(arr.size(), 1u);
    EXPECT_LE(arr.size(), 3u);
    for (const auto& x : arr) EXPECT_TRUE(x == "yes" || x == "no" || x.is_number_integer()) << g["content"];
    EXPECT_EQ(g["stop_type"], "eos") << what;
    EXPECT_EQ(post_stream(*c, b).content, g["content"]) << what;

    b.erase("grammar");
    b["json_schema"] = schema;
    const json j = completion(*c, b);
    const json v = json::parse(j["content"].get<std::string>(), nullptr, false);
    ASSERT_TRUE(v.is_object()) << what << ": " << j["content"];
    EXPECT_EQ(v.size(), 1u) << j["content"];
    ASSERT_TRUE(v.contains("n") && v["n"].is_number_integer()) << j["content"];
    EXPECT_GE(v["n"].get<int>(), 0);
    EXPECT_LE(v["n"].get<int>(), 9);
  }
  int status = 0;
  const json bad = post_json(*c, "/completion", {{"prompt", "x"}, {"grammar", "root ::= ("}}, &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(bad["error"]["param"], "grammar");
}

TEST_F(LlamaRoutes, ApplyTemplateIsThePromptTheChatRouteRuns) {
  auto c = srv_->http();
  const json messages = json::parse(R"([{"role":"system","content":"Be brief."},
      {"role":"user","content":"Tell me about the city."},{"role":"assistant","content":"It is old."},
      {"role":"user","content":"And the river?"}])");
  int status = 0;
  const json t = post_json(*c, "/apply-template", {{"messages", messages}}, &status);
  ASSERT_EQ(status, 200) << t.dump();
  const std::string prompt = t["prompt"];
  EXPECT_NE(prompt.find("And the river?"), std::string::npos) << prompt;
  // The same tokens as the chat route's prompt ...
  const json chat_ids = post_json(*c, "/tokenize", {{"messages", messages}}, &status)["tokens"];
  const json text_ids = post_json(*c, "/tokenize", {{"content", prompt}, {"add_special", true}}, &status)["tokens"];
  EXPECT_EQ(chat_ids, text_ids);
  // ... and the same generation.
  const json chat = post_json(*c, "/v1/chat/completions",
                              {{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}}, &status);
  ASSERT_EQ(status, 200) << chat.dump();
  const json l = completion(*c, greedy(prompt, 12));
  EXPECT_EQ(l["content"], chat["choices"][0]["message"]["content"]);
  EXPECT_EQ(l["tokens_evaluated"], chat["usage"]["prompt_tokens"]);

  const json bad = post_json(*c, "/apply-template", {{"messages", json::array({{{"role", "wizard"}, {"content", "x"}}})}}, &status);
  EXPECT_EQ(status, 400) << bad.dump();
  EXPECT_EQ(bad["error"]["param"], "messages");
  post_json(*c, "/apply-template", json::object(), &status);
  EXPECT_EQ(status, 400);
}

TEST_F(LlamaRoutes, PropsAndSlotsDescribeTheServer) {
  auto c = srv_->http();
  auto r = c->Get("/props");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json p = json::parse(r->body);
  EXPECT_EQ(p["default_generation_settings"]["n_ctx"], kCtx);
  const json& params = p["default_generation_settings"]["params"];
  EXPECT_FLOAT_EQ(params["temperature"].get<float>(), 0.8f);  // the server's defaults (llama.cpp's)
  EXPECT_EQ(params["top_k"], 40);
  EXPECT_EQ(params["n_predict"], -1);  // -n -1, the default
  EXPECT_EQ(p["total_slots"], kSlots);
  EXPECT_EQ(p["model_alias"], served_id(*c));
  EXPECT_TRUE(p["chat_template"].is_string());
  EXPECT_EQ(p["build_info"], std::string("pipellm ") + pipellm_version());

  // Idle: no slot is processing (earlier tests' requests have ended or are ending).
  const auto busy_slots = [&] {
    auto s = c->Get("/slots");
    EXPECT_TRUE(s && s->status == 200);
    const json a = s ? json::parse(s->body) : json::array();
    EXPECT_EQ(a.size(), static_cast<size_t>(kSlots));
    int busy = 0;
    for (const auto& x : a) {
      EXPECT_EQ(x["n_ctx"], kCtx);
      busy += x["is_processing"].get<bool>() ? 1 : 0;
    }
    return busy;
  };
  const auto wait_idle = [&] {
    for (int i = 0; i < 200 && busy_slots() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    return busy_slots() == 0;
  };
  EXPECT_TRUE(wait_idle());
  // While a stream runs, a slot is processing; the client hanging up frees it.
  httplib::Request req;
  req.method = "POST";
  req.path = "/completion";
  req.set_header("Content-Type", "application/json");
  req.body = json{{"prompt", "The jury said"}, {"n_predict", -1}, {"ignore_eos", true}, {"stream", true}}.dump();
  int busy_seen = -1;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
    busy_seen = busy_slots();
    return false;  // hang up after the first event
  };
  auto stream_client = srv_->http();
  stream_client->send(req);
  EXPECT_EQ(busy_seen, 1);
  EXPECT_TRUE(wait_idle()) << "the cancelled stream kept its slot";
}

TEST_F(LlamaRoutes, ModelById) {
  auto c = srv_->http();
  const std::string id = served_id(*c);
  auto r = c->Get(("/v1/models/" + id).c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  json m = json::parse(r->body);
  auto list = c->Get("/v1/models");
  json listed = json::parse(list->body)["data"][0];
  m.erase("created");
  listed.erase("created");
  EXPECT_EQ(m, listed);
  for (const char* other : {"/v1/models/gpt-4", "/v1/models/a/b"}) {
    auto n = c->Get(other);
    ASSERT_TRUE(n);
    EXPECT_EQ(n->status, 404) << other;
    const json e = json::parse(n->body, nullptr, false);
    EXPECT_EQ(error_code(e), "model_not_found") << n->body;
    EXPECT_EQ(e["error"]["type"], "invalid_request_error");
    EXPECT_EQ(e["error"]["param"], "model");
  }
}

TEST_F(LlamaRoutes, WrongMethodsAndBadRequests) {
  auto c = srv_->http();
  struct Wrong {
    const char* method;
    const char* path;
    const char* allow;
  };
  for (const Wrong& w : {Wrong{"GET", "/completion", "POST"}, Wrong{"GET", "/apply-template", "POST"},
                         Wrong{"POST", "/props", "GET"}, Wrong{"POST", "/slots", "GET"}, Wrong{"POST", "/v1/models/x", "GET"}}) {
    auto r = std::string(w.method) == "GET" ? c->Get(w.path) : c->Post(w.path, "{}", "application/json");
    ASSERT_TRUE(r) << w.path;
    EXPECT_EQ(r->status, 405) << w.method << " " << w.path;
    EXPECT_EQ(r->get_header_value("Allow"), w.allow) << w.path;
    EXPECT_EQ(error_code(json::parse(r->body, nullptr, false)), "method_not_allowed") << r->body;
  }
  struct Bad {
    json body;
    const char* param;
    const char* code;
  };
  for (const Bad& b : {Bad{{{"prompt", "x"}, {"n_predict", 0}}, "n_predict", "unsupported_parameter"},
                       Bad{{{"prompt", "x"}, {"n_predict", 600}}, "n_predict", "context_length_exceeded"},
                       Bad{{{"prompt", "x"}, {"mirostat", 2}}, "mirostat", "unsupported_parameter"},
                       Bad{{{"prompt", "x"}, {"temperature", "hot"}}, "temperature", "invalid_parameter"},
                       Bad{{{"n_predict", 4}}, "prompt", "invalid_parameter"}}) {
    int status = 0;
    const json e = post_json(*c, "/completion", b.body, &status);
    EXPECT_EQ(status, 400) << b.body.dump();
    EXPECT_EQ(e["error"]["param"], b.param) << e.dump();
    EXPECT_EQ(e["error"]["code"], b.code) << e.dump();
  }
  auto text = c->Post("/completion", R"({"prompt":"x"})", "text/plain");  // the browser checks apply here too
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 415);
  // Metrics label the new routes by name (the id route by its pattern).
  completion(*c, greedy("x", 1));
  // A request is counted once its response is written: the client may read /metrics first.
  std::string metrics;
  for (int i = 0; i < 100; ++i) {
    auto m = c->Get("/metrics");
    ASSERT_TRUE(m);
    metrics = m->body;
    if (metrics.find("route=\"/completion\",status=\"200\"") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(metrics.find("route=\"/completion\",status=\"200\""), std::string::npos);
  EXPECT_NE(metrics.find("route=\"/v1/models/{id}\",status=\"405\""), std::string::npos);
}

// -c with -np is llama-server's: the context shared by the slots, 1024 / 4 = 256 each.
TEST(LlamaRoutesContext, NpSlotsShareTheContext) {
  ServingProcess srv({"--model", model_path(kModel), "--backend", "inprocess", "-c", "1024", "-np", "4", "--threads", "1"});
  auto c = srv.http();
  auto r = c->Get("/props");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json p = json::parse(r->body);
  EXPECT_EQ(p["total_slots"], 4);
  EXPECT_EQ(p["default_generation_settings"]["n_ctx"], 256);
  // A prompt beyond a slot's share is refused as too long for the context.
  std::string prompt;
  for (int i = 0; i < 300; ++i) prompt += " the";
  int status = 0;
  post_json(*c, "/completion", json{{"prompt", prompt}, {"n_predict", 1}}, &status);
  EXPECT_EQ(status, 400);
}

// API keys: every new route needs one, as the OpenAI routes do; /health does not.
TEST(LlamaRoutesKeys, EveryNewRouteNeedsTheKey) {
  ServingProcess srv({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "256", "--slots", "2", "--threads", "1"},
                     {"PIPELLM_API_KEYS=sekrit"});
  auto c = srv.http();
  const httplib::Headers key = {{"Authorization", "Bearer sekrit"}};
  const std::string body = greedy("The jury said", 2).dump();
  const std::string tmpl = R"({"messages":[{"role":"user","content":"Hi"}]})";
  auto no_key = c->Post("/completion", body, "application/json");
  ASSERT_TRUE(no_key);
  EXPECT_EQ(no_key->status, 401);
  EXPECT_EQ(c->Post("/completion", key, body, "application/json")->status, 200);
  EXPECT_EQ(c->Post("/apply-template", tmpl, "application/json")->status, 401);
  EXPECT_EQ(c->Post("/apply-template", key, tmpl, "application/json")->status, 200);
  for (const char* path : {"/props", "/slots", "/v1/models/x"}) {
    EXPECT_EQ(c->Get(path)->status, 401) << path;
    EXPECT_NE(c->Get(path, key)->status, 401) << path;
  }
  EXPECT_EQ(c->Get("/health")->status, 200);
}

// A backend that never comes up until the test says so (the model "loading").
class LoadingBackend final : public coord::Backend {
 public:
  void start(coord::BackendListener* l) override { listener = l; }
  void submit(const link::SubmitRequest&) override {}
  void cancel(uint64_t) override {}
  void stop() override {}
  coord::BackendState state() const override { return coord::BackendState::Starting; }
  std::string describe() const override { return "loading"; }
  coord::BackendListener* listener = nullptr;
};

TEST(LlamaRoutesHealth, LoadingIs503WithLlamaServersShape) {
  auto gguf = GgufFile::open(model_path(kModel));
  coord::ModelText text(Tokenizer::from_gguf(*gguf));
  LoadingBackend backend;
  coord::RequestScheduler sched(backend, coord::SchedulerOptions{});
  backend.start(&sched);
  coord::ApiKeys keys;
  coord::StreamLimiter streams(0);
  coord::Metrics metrics;
  coord::HttpOptions ho;
  ho.listen = "127.0.0.1:0";
  ho.threads = 2;
  coord::HttpFrontDoor door(coord::FrontDoorContext{sched, text, coord::RequestLimits{}, keys, streams, metrics}, ho);
  httplib::Client c("127.0.0.1", door.port());
  const auto get = [&](const char* path) {
    auto r = c.Get(path);
    EXPECT_TRUE(r) << path;
    return r ? std::make_pair(r->status, json::parse(r->body, nullptr, false)) : std::make_pair(0, json());
  };

  auto [status, body] = get("/health");
  EXPECT_EQ(status, 503);
  EXPECT_EQ(body["error"], json::parse(R"({"code":503,"message":"Loading model","type":"unavailable_error"})")) << body;
  EXPECT_EQ(body["status"], "unavailable");
  for (const char* path : {"/props", "/slots", "/v1/models/x"}) {
    std::tie(status, body) = get(path);
    EXPECT_EQ(status, 503) << path;
    EXPECT_EQ(error_code(body), "stages_unavailable") << path << ": " << body;
  }
  int post_status = 0;
  post_json(c, "/completion", greedy("x", 1), &post_status);
  EXPECT_EQ(post_status, 503);

  link::HelloMsg hello;
  hello.model_name = "loaded";
  hello.n_vocab = text.tokenizer().n_vocab();
  hello.n_ctx = 64;
  hello.max_sequences = 3;
  backend.listener->on_up(hello);
  std::tie(status, body) = get("/health");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(body["status"], "ok");
  std::tie(status, body) = get("/slots");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(body.size(), 3u);
  // Down after serving: 503 with the reason, not "Loading model".
  backend.listener->on_down("rank 1 exited (signal 9)");
  std::tie(status, body) = get("/health");
  EXPECT_EQ(status, 503);
  EXPECT_EQ(body["error"]["message"], "rank 1 exited (signal 9)");
  EXPECT_EQ(body["reason"], "rank 1 exited (signal 9)");
}

// /infill (coordinator/http_infill.h) on a random model with Qwen3's vocabulary (its FIM tokens):
// the served text is /completion's for the prompt infill_prompt lays out, streamed or not; the
// tiny llama fixture, without FIM tokens, is refused by name.
TEST(LlamaInfill, TheRouteRunsTheFimLayout) {
  const std::string model = ::testing::TempDir() + "/pipellm_infill_qwen3_" + std::to_string(::getpid()) + ".gguf";
  const std::string cmd = std::string(PIPELLM_CLI_BIN) + " mkmodel --preset tiny --quant Q8_0 --vocab " +
                          PIPELLM_TESTDATA + "/vocab/vocab-qwen3.gguf " + model + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ServingProcess srv({"--model", model, "--backend", "inprocess", "--ctx", "1024", "--slots", "2", "--threads", "1"});
  auto c = srv.http();
  const json body = {{"input_prefix", "def add(a, b):\n    "}, {"input_suffix", "\n\nprint(add(1, 2))\n"},
                     {"input_extra", {{{"filename", "util.py"}, {"text", "X = 1\n"}}}}, {"n_predict", 12},
                     {"temperature", 0}, {"ignore_eos", true}, {"cache_prompt", false}};
  int status = 0;
  const json got = post_json(*c, "/infill", body, &status);
  ASSERT_EQ(status, 200) << got.dump() << "\n" << srv.log();
  const auto tok = Tokenizer::from_gguf(*GgufFile::open(model));
  const std::vector<int32_t> layout = coord::infill_prompt(*tok, body, 12, 1024);
  EXPECT_EQ(got["tokens_evaluated"], static_cast<int>(layout.size()));
  const json same = post_json(*c, "/completion",
                              {{"prompt", layout}, {"n_predict", 12}, {"temperature", 0}, {"ignore_eos", true},
                               {"cache_prompt", false}},
                              &status);
  ASSERT_EQ(status, 200) << same.dump();
  EXPECT_EQ(got["content"], same["content"]);
  EXPECT_EQ(got["tokens_predicted"], 12);
  // A huge n_predict is refused by name, not overflowed in the layout's arithmetic.
  const json big = post_json(*c, "/infill", {{"input_prefix", "x"}, {"n_predict", 9223372036854775807LL}}, &status);
  EXPECT_EQ(status, 400) << big.dump();
  EXPECT_EQ(big["error"]["param"], "n_predict") << big.dump();
  std::filesystem::remove(model);
}

TEST_F(LlamaRoutes, InfillNeedsFimTokens) {
  auto c = srv_->http();
  int status = 0;
  const json e = post_json(*c, "/infill", {{"input_prefix", "int main() {"}, {"input_suffix", "}"}}, &status);
  EXPECT_EQ(status, 400) << e.dump();
  EXPECT_EQ(e["error"]["code"], "not_supported") << e.dump();
  auto get = c->Get("/infill");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 405);
}

}  // namespace
}  // namespace pipellm::test

// The HTTP front door of a real pipellm-coordinator under load and against browsers (issue 21
// items 8, 9 and 11's 405):
// - with every HTTP worker streaming, /health and /metrics still answer at once (their own
//   workers), and a request beyond capacity gets 429 with Retry-After within the queue deadline,
//   counted in /metrics (it used to wait invisibly);
// - a POST body not declared JSON is 415; a Host that is not loopback (DNS rebinding) and an
//   Origin that is neither this server nor a --cors-origin are 403; a --cors-origin gets its
//   preflight and CORS headers;
// - a known route asked with the wrong method is 405 with Allow.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
constexpr const char* kModel = "tiny-llama-Q8_0";

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string error_code(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("error") || !j["error"]["code"].is_string()) return "<no error code: " + body + ">";
  return j["error"]["code"].get<std::string>();
}

TEST(HttpAdmission, HealthAndMetricsAnswerAndOverflowIs429WhileEveryWorkerStreams) {
  ServingProcess srv({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "512", "--slots", "4",
                      "--threads", "1", "--debug-step-delay-ms", "40", "--http-threads", "2",
                      "--http-queue-timeout-ms", "500"});
  // Both workers busy with generations of ~8 s.
  std::atomic<int> finished{0};
  std::vector<std::thread> busy;
  for (int i = 0; i < 2; ++i) {
    busy.emplace_back([&srv, &finished, i] {
      auto c = srv.http();
      c->set_read_timeout(60, 0);
      int status = 0;
      post_json(*c, "/v1/completions",
                {{"prompt", "busy " + std::to_string(i)}, {"max_tokens", 200}, {"ignore_eos", true}, {"temperature", 0}},
                &status);
      EXPECT_EQ(status, 200);
      ++finished;
    });
  }
  // Wait until both workers hold a request (the metrics say so).
  auto c = srv.http();
  c->set_read_timeout(3, 0);
  const auto t_wait = Clock::now();
  std::string page;
  while (seconds_since(t_wait) < 10) {
    auto m = c->Get("/metrics");
    ASSERT_TRUE(m) << "/metrics did not answer\n" << srv.log();
    page = m->body;
    if (page.find("pipellm_http_workers_busy 2") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_NE(page.find("pipellm_http_workers_busy 2"), std::string::npos) << page;

  for (const char* path : {"/health", "/metrics", "/v1/models"}) {
    const auto t0 = Clock::now();
    auto r = c->Get(path);
    ASSERT_TRUE(r) << path << " did not answer while every worker streams";
    EXPECT_EQ(r->status, 200) << path;
    EXPECT_LT(seconds_since(t0), 1.0) << path;
  }

  // One more generation: no worker within 500 ms -> 429 with Retry-After.
  const auto t0 = Clock::now();
  auto extra = srv.http();
  extra->set_read_timeout(10, 0);
  auto r = extra->Post("/v1/completions", json{{"prompt", "one too many"}, {"max_tokens", 2}}.dump(), "application/json");
  ASSERT_TRUE(r) << "the request beyond capacity got no answer";
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  EXPECT_EQ(error_code(r->body), "server_busy");
  EXPECT_LT(seconds_since(t0), 3.0);
  EXPECT_EQ(finished.load(), 0) << "the generations ended before the overflow was tested";

  auto m = c->Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("pipellm_http_busy_refusals_total 1"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find(R"(pipellm_requests_total{front_door="http",route="/v1/completions",status="429"} 1)"),
            std::string::npos)
      << m->body;
  for (auto& t : busy) t.join();
}

class HttpBrowsers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    srv_ = new ServingProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "256", "--slots", "2",
                               "--threads", "1", "--cors-origin", "http://app.example:3000"});
  }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
  }
  static std::string self() { return "http://127.0.0.1:" + std::to_string(srv_->http_port()); }
  static ServingProcess* srv_;
};
ServingProcess* HttpBrowsers::srv_ = nullptr;

const std::string kBody = R"({"prompt": "hi", "max_tokens": 2})";

TEST_F(HttpBrowsers, PostBodiesMustBeJson) {
  auto c = srv_->http();
  for (const char* type : {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}) {
    auto r = c->Post("/v1/completions", kBody, type);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 415) << type << ": " << r->body;
    EXPECT_EQ(error_code(r->body), "unsupported_media_type") << type;
  }
  auto r = c->Post("/v1/completions", kBody, "application/json; charset=utf-8");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(HttpBrowsers, HostMustBeLoopback) {
  auto c = srv_->http();
  const std::string port = std::to_string(srv_->http_port());
  for (const std::string& host : std::vector<std::string>{"evil.example.com", "evil.example.com:" + port, "127.0.0.1:1",
                                                          "localhost.evil.example"}) {
    for (const char* path : {"/health", "/v1/models"}) {
      auto r = c->Get(path, {{"Host", host}});
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 403) << host << " " << path << ": " << r->body;
      EXPECT_EQ(error_code(r->body), "host_not_allowed") << host;
    }
  }
  for (const std::string& host : std::vector<std::string>{"localhost:" + port, "127.0.0.1", "[::1]:" + port}) {
    auto r = c->Get("/v1/models", {{"Host", host}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << host << ": " << r->body;
  }
}

TEST_F(HttpBrowsers, OriginMustBeThisServerOrACorsOrigin) {
  auto c = srv_->http();
  for (const char* origin : {"http://evil.example.com", "null", "http://app.example:3001"}) {
    auto r = c->Post("/v1/completions", {{"Origin", origin}}, kBody, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << origin << ": " << r->body;
    EXPECT_EQ(error_code(r->body), "origin_not_allowed") << origin;
  }
  auto same = c->Post("/v1/completions", {{"Origin", self()}}, kBody, "application/json");
  ASSERT_TRUE(same);
  EXPECT_EQ(same->status, 200) << same->body;
  EXPECT_TRUE(same->get_header_value("Access-Control-Allow-Origin").empty());

  auto pre = c->Options("/v1/completions", {{"Origin", "http://app.example:3000"},
                                            {"Access-Control-Request-Method", "POST"},
                                            {"Access-Control-Request-Headers", "content-type"}});
  ASSERT_TRUE(pre);
  EXPECT_EQ(pre->status, 204);
  EXPECT_EQ(pre->get_header_value("Access-Control-Allow-Origin"), "http://app.example:3000");
  EXPECT_NE(pre->get_header_value("Access-Control-Allow-Headers").find("Content-Type"), std::string::npos);
  auto cors = c->Post("/v1/completions", {{"Origin", "http://app.example:3000"}}, kBody, "application/json");
  ASSERT_TRUE(cors);
  EXPECT_EQ(cors->status, 200) << cors->body;
  EXPECT_EQ(cors->get_header_value("Access-Control-Allow-Origin"), "http://app.example:3000");
}

TEST_F(HttpBrowsers, WrongMethodIs405WithAllow) {
  auto c = srv_->http();
  auto g = c->Get("/v1/completions");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->status, 405) << g->body;
  EXPECT_EQ(g->get_header_value("Allow"), "POST");
  EXPECT_EQ(error_code(g->body), "method_not_allowed");
  auto p = c->Post("/health", "{}", "application/json");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 405) << p->body;
  EXPECT_EQ(p->get_header_value("Allow"), "GET");
  auto n = c->Get("/no/such/route");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->status, 404);
}

}  // namespace
}  // namespace pipellm::test

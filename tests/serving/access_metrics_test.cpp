// API keys, bearer checks, the per-key stream cap, the listen-address policy, and the
// Prometheus page (parsed line by line the way a scraper reads it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "coordinator/access_control.h"
#include "coordinator/metrics.h"

namespace pipellm::coord {
namespace {

TEST(ApiKeys, FileAndEnvironment) {
  const std::string path = "/tmp/pipellm_keys_" + std::to_string(::getpid());
  std::ofstream(path) << "# team keys\n\n  sk-one  \nsk-two\n";
  const ApiKeys k = ApiKeys::load(path, "sk-three,,sk-four");
  EXPECT_TRUE(k.enabled());
  EXPECT_EQ(k.size(), 4u);
  EXPECT_EQ(k.find("sk-one"), 0u);
  EXPECT_EQ(k.find("sk-four"), 3u);
  EXPECT_FALSE(k.find("sk-on"));
  EXPECT_FALSE(k.find("sk-one "));
  EXPECT_FALSE(k.find(""));
  std::ofstream(path) << "# nothing\n";
  EXPECT_THROW(ApiKeys::load(path, std::nullopt), Error);
  std::remove(path.c_str());
  EXPECT_THROW(ApiKeys::load(path, std::nullopt), Error);
  EXPECT_FALSE(ApiKeys::load("", std::nullopt).enabled());
}

// Issue 21 item 7: a key source that is given but yields no key is fatal, never "no keys".
TEST(ApiKeys, ASourceWithoutKeysFailsClosed) {
  for (const char* env : {"", ", ,", " ", ",,,", " , \t"}) {
    try {
      ApiKeys::load("", std::string(env));
      ADD_FAILURE() << "PIPELLM_API_KEYS='" << env << "' started without keys";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("$PIPELLM_API_KEYS is set but holds no key"), std::string::npos) << e.what();
    }
  }
  const ApiKeys k = ApiKeys::load("", std::string(" sk-a , ,sk-b "));
  EXPECT_EQ(k.size(), 2u);
  EXPECT_EQ(k.find("sk-b"), 1u);
}

TEST(ApiKeys, BearerCheck) {
  const ApiKeys none;
  EXPECT_TRUE(check_bearer(none, "").ok());
  EXPECT_EQ(check_bearer(none, "Bearer whatever").principal, "anonymous");

  const ApiKeys k = ApiKeys::of({"alpha", "beta"});
  EXPECT_EQ(check_bearer(k, "").kind, AuthResult::Kind::Missing);
  EXPECT_EQ(check_bearer(k, "").code(), "missing_api_key");
  EXPECT_EQ(check_bearer(k, "alpha").kind, AuthResult::Kind::Malformed);
  EXPECT_EQ(check_bearer(k, "Basic YWxwaGE=").kind, AuthResult::Kind::Malformed);
  EXPECT_EQ(check_bearer(k, "Bearer gamma").kind, AuthResult::Kind::Wrong);
  EXPECT_EQ(check_bearer(k, "Bearer gamma").code(), "invalid_api_key");
  EXPECT_EQ(check_bearer(k, "Bearer beta").principal, "key #2");
  EXPECT_EQ(check_bearer(k, "bearer  alpha ").principal, "key #1");
  // Messages never carry the key.
  for (const char* h : {"", "Bearer gamma", "gamma"}) {
    EXPECT_EQ(check_bearer(k, h).message().find("gamma"), std::string::npos);
  }
}

TEST(StreamLimiter, PerPrincipalCap) {
  StreamLimiter lim(2);
  auto a = lim.try_acquire("key #1");
  auto b = lim.try_acquire("key #1");
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(lim.try_acquire("key #1"));
  EXPECT_TRUE(lim.try_acquire("key #2"));  // another key is not affected (and its lease ends here)
  EXPECT_EQ(lim.open("key #2"), 0);
  a->release();
  EXPECT_EQ(lim.open("key #1"), 1);
  {
    auto c = lim.try_acquire("key #1");
    EXPECT_TRUE(c);
    StreamLimiter::Lease moved = std::move(*c);
    EXPECT_EQ(lim.open("key #1"), 2);
  }
  EXPECT_EQ(lim.open("key #1"), 1);
  StreamLimiter unlimited(0);
  std::vector<StreamLimiter::Lease> many;
  for (int i = 0; i < 100; ++i) many.push_back(std::move(*unlimited.try_acquire("anonymous")));
  EXPECT_EQ(unlimited.open("anonymous"), 100);
}

TEST(ListenPolicy, LoopbackAndAddresses) {
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.1.2.3"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("10.0.0.1"));
  EXPECT_FALSE(is_loopback_host("127.evil.com"));
  EXPECT_EQ(split_host_port("[::1]:80"), (std::pair<std::string, int>{"::1", 80}));
  EXPECT_EQ(split_host_port("127.0.0.1:0").second, 0);
  for (const char* bad : {"nohost", ":80", "h:", "h:99999", "h:12a"}) EXPECT_THROW(split_host_port(bad), InvalidArgument) << bad;
}

// A Prometheus text-format reader: every sample line is `name{labels} value`, every family
// has HELP and TYPE before its samples, histogram buckets are cumulative and end with +Inf.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

std::vector<Sample> parse_prometheus(const std::string& text, std::map<std::string, std::string>& types) {
  std::vector<Sample> out;
  const std::regex sample_re(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$)");
  const std::regex label_re(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      types[name] = type;
      continue;
    }
    if (line[0] == '#') continue;
    std::smatch m;
    if (!std::regex_match(line, m, sample_re)) {
      ADD_FAILURE() << "not a sample line: " << line;
      continue;
    }
    Sample s;
    s.name = m[1];
    const std::string labels = m[3];
    for (auto it = std::sregex_iterator(labels.begin(), labels.end(), label_re); it != std::sregex_iterator(); ++it) {
      s.labels[(*it)[1]] = (*it)[2];
    }
    const std::string v = m[4];
    s.value = v == "+Inf" ? INFINITY : std::stod(v);
    std::string family = s.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sfx = suffix;
      if (family.size() > sfx.size() && family.compare(family.size() - sfx.size(), sfx.size(), sfx) == 0 &&
          types.count(family.substr(0, family.size() - sfx.size()))) {
        family = family.substr(0, family.size() - sfx.size());
      }
    }
    EXPECT_TRUE(types.count(family)) << "sample before its TYPE: " << line;
    out.push_back(std::move(s));
  }
  return out;
}

double value_of(const std::vector<Sample>& s, const std::string& name, const std::map<std::string, std::string>& labels = {}) {
  for (const auto& x : s) {
    if (x.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) match = match && x.labels.count(k) && x.labels.at(k) == v;
    if (match) return x.value;
  }
  return NAN;
}

TEST(Metrics, RendersParsableText) {
  Metrics m;
  m.count_request("http", "/v1/completions", "200");
  m.count_request("http", "/v1/completions", "200");
  m.count_request("grpc", "Generate", "UNAUTHENTICATED");
  m.count_refusal("http", "queue_full");
  m.add_prompt_tokens(12);
  m.add_generated_tokens(30);
  m.observe_time_to_first_token(0.003);
  m.observe_time_to_first_token(0.2);
  for (int i = 0; i < 5; ++i) m.observe_inter_token_latency(0.0015);
  m.observe_request_duration("http", 1.5);
  m.set_stage_stats({{0, "cuda:0", 0.004, 0.0002, 1.5e9}, {1, "cpu", 0.01, 0.001, -1}});
  SchedulerStats st;
  st.queued = 3;
  st.in_flight = 2;
  std::map<std::string, std::string> types;
  const auto s = parse_prometheus(m.render(st, true), types);

  EXPECT_EQ(types["pipellm_requests_total"], "counter");
  EXPECT_EQ(types["pipellm_time_to_first_token_seconds"], "histogram");
  EXPECT_EQ(value_of(s, "pipellm_up"), 1);
  EXPECT_EQ(value_of(s, "pipellm_requests_total", {{"front_door", "http"}, {"route", "/v1/completions"}, {"status", "200"}}), 2);
  EXPECT_EQ(value_of(s, "pipellm_requests_total", {{"front_door", "grpc"}, {"status", "UNAUTHENTICATED"}}), 1);
  EXPECT_EQ(value_of(s, "pipellm_refusals_total", {{"reason", "queue_full"}}), 1);
  EXPECT_EQ(value_of(s, "pipellm_queue_depth"), 3);
  EXPECT_EQ(value_of(s, "pipellm_active_sequences"), 2);
  EXPECT_EQ(value_of(s, "pipellm_prompt_tokens_total"), 12);
  EXPECT_EQ(value_of(s, "pipellm_generated_tokens_total"), 30);
  EXPECT_EQ(value_of(s, "pipellm_time_to_first_token_seconds_count"), 2);
  EXPECT_NEAR(value_of(s, "pipellm_time_to_first_token_seconds_sum"), 0.203, 1e-9);
  EXPECT_EQ(value_of(s, "pipellm_time_to_first_token_seconds_bucket", {{"le", "0.005"}}), 1);
  EXPECT_EQ(value_of(s, "pipellm_time_to_first_token_seconds_bucket", {{"le", "0.25"}}), 2);
  EXPECT_EQ(value_of(s, "pipellm_time_to_first_token_seconds_bucket", {{"le", "+Inf"}}), 2);
  EXPECT_EQ(value_of(s, "pipellm_inter_token_latency_seconds_bucket", {{"le", "0.001"}}), 0);
  EXPECT_EQ(value_of(s, "pipellm_inter_token_latency_seconds_bucket", {{"le", "0.0025"}}), 5);
  EXPECT_EQ(value_of(s, "pipellm_request_duration_seconds_count", {{"front_door", "http"}}), 1);
  EXPECT_EQ(value_of(s, "pipellm_stage_step_seconds", {{"stage", "1"}}), 0.01);
  EXPECT_EQ(value_of(s, "pipellm_stage_transfer_seconds", {{"stage", "0"}, {"device", "cuda:0"}}), 0.0002);
  EXPECT_EQ(value_of(s, "pipellm_stage_gpu_memory_bytes", {{"stage", "0"}}), 1.5e9);
  EXPECT_TRUE(std::isnan(value_of(s, "pipellm_stage_gpu_memory_bytes", {{"stage", "1"}})));  // not reported

  // Buckets are cumulative.
  double prev = 0;
  for (const auto& x : s) {
    if (x.name != "pipellm_inter_token_latency_seconds_bucket") continue;
    EXPECT_GE(x.value, prev);
    prev = x.value;
  }
}

TEST(Metrics, LabelValuesEscaped) {
  EXPECT_EQ(prom_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  Metrics m;
  m.count_refusal("http", "we\"ird");
  std::map<std::string, std::string> types;
  const auto s = parse_prometheus(m.render({}, false), types);
  EXPECT_EQ(value_of(s, "pipellm_up"), 0);
}

}  // namespace
}  // namespace pipellm::coord

// pipellm-coordinator's command line as a llama-server user types it: each row's settings are
// llama-server's documented meaning of the flag, written out by hand.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "coordinator/access_control.h"
#include "coordinator/coordinator_options.h"

namespace pipellm::coord {
namespace {

CoordinatorOptions parse_line(std::vector<std::string> args) {
  args.insert(args.begin(), "pipellm-coordinator");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_coordinator_options(static_cast<int>(argv.size()), argv.data());
}

TEST(CoordinatorFlags, LlamaServerSpellings) {
  struct Row {
    std::vector<std::string> args;
    std::function<void(const CoordinatorOptions&)> check;
  };
  const Row rows[] = {
      {{"-m", "x.gguf"},
       [](const CoordinatorOptions& o) {
         EXPECT_EQ(o.model, "x.gguf");
         EXPECT_EQ(o.n_ctx, 0);                   // the model's, decided at startup
         EXPECT_EQ(o.default_max_tokens, 0);      // -n -1: to the end
         EXPECT_EQ(o.serving.http_listen, "");    // the default 127.0.0.1:8080
       }},
      {{"--model", "x.gguf", "-c", "512", "-np", "3", "-t", "2"},
       [](const CoordinatorOptions& o) {
         EXPECT_EQ(o.n_ctx, 512);
         EXPECT_EQ(o.n_slots, 3);
         EXPECT_TRUE(o.ctx_shared);  // llama-server's -np: the 3 share the 512
         EXPECT_EQ(o.n_threads, 2);
       }},
      {{"-m", "x.gguf", "-np", "-1"},  // llama-server's auto
       [](const CoordinatorOptions& o) {
         EXPECT_EQ(o.n_slots, 0);
         EXPECT_FALSE(o.ctx_shared);
       }},
      {{"-m", "x.gguf", "--ctx", "256", "--slots", "2", "--threads", "1"},  // the older spellings
       [](const CoordinatorOptions& o) {
         EXPECT_EQ(o.n_ctx, 256);
         EXPECT_EQ(o.n_slots, 2);
         EXPECT_FALSE(o.ctx_shared);  // each has the whole 256
         EXPECT_EQ(o.n_threads, 1);
       }},
      {{"-m", "x.gguf", "--host", "0.0.0.0", "--port", "9000"},
       [](const CoordinatorOptions& o) { EXPECT_EQ(o.serving.http_listen, "0.0.0.0:9000"); }},
      {{"-m", "x.gguf", "--port", "9001"}, [](const CoordinatorOptions& o) { EXPECT_EQ(o.serving.http_listen, "127.0.0.1:9001"); }},
      {{"-m", "x.gguf", "--host", "::1"}, [](const CoordinatorOptions& o) { EXPECT_EQ(o.serving.http_listen, "[::1]:8080"); }},
      {{"-m", "x.gguf", "-n", "64"}, [](const CoordinatorOptions& o) { EXPECT_EQ(o.default_max_tokens, 64); }},
      {{"-m", "x.gguf", "-n", "-1"}, [](const CoordinatorOptions& o) { EXPECT_EQ(o.default_max_tokens, 0); }},
      {{"-m", "x.gguf", "-ctk", "q8_0", "-ctv", "q4_0", "-fa", "on"},
       [](const CoordinatorOptions& o) {
         EXPECT_EQ(o.kv_type_k, TensorType::Q8_0);
         EXPECT_EQ(o.kv_type_v, TensorType::Q4_0);
       }},
      {{"-m", "x.gguf", "-ngl", "0"}, [](const CoordinatorOptions& o) { EXPECT_EQ(o.device, "cpu"); }},
      {{"-m", "x.gguf", "--temp", "0", "--top-k", "5", "-s", "-1", "--chat-template", "chatml", "--jinja"},
       [](const CoordinatorOptions& o) {
         EXPECT_EQ(o.sampling.temperature, 0.0f);
         EXPECT_EQ(o.sampling.top_k, 5);
         EXPECT_EQ(o.sampling.seed, -1);
         EXPECT_EQ(o.chat_template, "chatml");
       }},
      {{"-m", "x.gguf"},  // embeddings off; the model's pooling
       [](const CoordinatorOptions& o) {
         EXPECT_FALSE(o.embeddings);
         EXPECT_EQ(o.pooling, "");
       }},
      {{"-m", "x.gguf", "--embeddings", "--pooling", "mean"},
       [](const CoordinatorOptions& o) {
         EXPECT_TRUE(o.embeddings);
         EXPECT_EQ(o.pooling, "mean");
       }},
      {{"-m", "x.gguf", "--embedding", "--pooling", "last"},  // llama-server's other spelling
       [](const CoordinatorOptions& o) {
         EXPECT_TRUE(o.embeddings);
         EXPECT_EQ(o.pooling, "last");
       }},
      {{"-m", "x.gguf", "--default-max-tokens", "32"}, [](const CoordinatorOptions& o) { EXPECT_EQ(o.default_max_tokens, 32); }},
      {{"-m", "x.gguf", "--api-key", "k1,k2", "--api-key", "k3"},
       [](const CoordinatorOptions& o) {
         const ApiKeys keys = ApiKeys::load("", std::nullopt, o.serving.api_keys);
         EXPECT_EQ(keys.size(), 3u);
         EXPECT_TRUE(keys.find("k2").has_value());
       }},
  };
  for (const Row& r : rows) {
    std::string line;
    for (const auto& a : r.args) line += a + " ";
    SCOPED_TRACE(line);
    r.check(parse_line(r.args));
  }
}

TEST(CoordinatorFlags, BadFlagsExitTwoNamingTheFlag) {
  EXPECT_EXIT(parse_line({"-m", "x.gguf", "--port", "70000"}), ::testing::ExitedWithCode(2), "--port");
  EXPECT_EXIT(parse_line({"-m", "x.gguf", "-np", "-2"}), ::testing::ExitedWithCode(2), "--parallel");
  EXPECT_EXIT(parse_line({"-m", "x.gguf", "-n", "-2"}), ::testing::ExitedWithCode(2), "--n-predict");
  EXPECT_EXIT(parse_line({"-m", "x.gguf", "--http-listen", "127.0.0.1:1", "--port", "2"}), ::testing::ExitedWithCode(2),
              "excludes");
  EXPECT_EXIT(parse_line({"-c", "512"}), ::testing::ExitedWithCode(2), "give --config or -m/--model");
  EXPECT_EXIT(parse_line({"-m", "x.gguf", "--grammar", "root ::= \"a\""}), ::testing::ExitedWithCode(2), "per request");
  EXPECT_EXIT(parse_line({"-m", "x.gguf", "--pooling", "avg"}), ::testing::ExitedWithCode(2), "--pooling");
  EXPECT_THROW(ApiKeys::load("", std::nullopt, {" , "}), Error);  // fails closed
}

}  // namespace
}  // namespace pipellm::coord

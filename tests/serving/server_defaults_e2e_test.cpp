// llama-server's server-wide flags on a real pipellm-coordinator: the sampling flags are the
// defaults of requests that leave a setting out (--temp 0: greedy unless a request asks
// otherwise), -n is the default length, and --chat-template replaces the model's template (a
// model without one can chat). References: the same request with the setting spelt out, and the
// engine's own rendering of the built-in template.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/chat_template.h"
#include "flags/builtin_chat_templates.h"
#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;

TEST(ServerDefaults, SamplingFlagsAndChatTemplate) {
  // tiny-llama has no tokenizer.chat_template.
  ServingProcess srv({"-m", model_path("tiny-llama-Q8_0"), "--backend", "inprocess", "-c", "256", "-np", "2", "-t", "1",
                      "--temp", "0", "-n", "12", "--chat-template", "chatml"});
  auto c = srv.http();
  int status = 0;
  // No temperature: the server's 0 (greedy), so any two seeds agree with an explicit temperature 0.
  const json a = post_json(*c, "/v1/completions", {{"prompt", "Once upon a time"}, {"seed", 1}, {"ignore_eos", true}}, &status);
  ASSERT_EQ(status, 200) << a.dump();
  const json b = post_json(*c, "/v1/completions",
                           {{"prompt", "Once upon a time"}, {"seed", 99}, {"temperature", 0}, {"ignore_eos", true}}, &status);
  ASSERT_EQ(status, 200) << b.dump();
  EXPECT_EQ(a["choices"][0]["text"], b["choices"][0]["text"]);
  EXPECT_EQ(a["usage"]["completion_tokens"], 12);  // -n 12
  // A request's own temperature still wins: at 1.5 some seed differs from greedy.
  bool differs = false;
  for (int seed = 1; seed <= 6 && !differs; ++seed) {
    const json s = post_json(*c, "/v1/completions",
                             {{"prompt", "Once upon a time"}, {"seed", seed}, {"temperature", 1.5}, {"ignore_eos", true}}, &status);
    differs = s["choices"][0]["text"] != a["choices"][0]["text"];
  }
  EXPECT_TRUE(differs);

  // --chat-template chatml: the prompt is chatml's rendering.
  const json msgs = json::array({{{"role", "user"}, {"content", "hi"}}});
  const json t = post_json(*c, "/apply-template", {{"messages", msgs}}, &status);
  ASSERT_EQ(status, 200) << t.dump();
  EXPECT_EQ(t["prompt"], apply_chat_template(*flags::builtin_chat_template("chatml"), {{"user", "hi"}}, true, "", ""));
  const json chat = post_json(*c, "/v1/chat/completions", {{"messages", msgs}, {"max_tokens", 2}}, &status);
  EXPECT_EQ(status, 200) << chat.dump();
}

}  // namespace
}  // namespace pipellm::test

#include "tests/coordinator/serving_cases.h"

#include <gtest/gtest.h>

#include <thread>

#include "coordinator/text_stream.h"
#include "engine/runtime/generator.h"
#include "tests/reference_generate.h"

namespace pipellm::test {

namespace v1 = pipellm::v1;

std::vector<Case> cases16() {
  const char* prompts[] = {"Hello world",     "The quick brown fox", "Once upon a time", "abc def ghi",
                           "In the beginning", "numbers 1 2 3 4 5",   "lorem ipsum dolor", "What is the capital"};
  std::vector<Case> c;
  for (int i = 0; i < 16; ++i) {
    const bool greedy = i % 2 == 0;
    c.push_back({std::string(prompts[i % 8]) + (i >= 8 ? " again" : ""), greedy ? 0.0f : 0.7f + 0.05f * static_cast<float>(i % 4),
                 greedy ? 0 : 10 + i, greedy ? 1.0f : 0.9f, greedy ? 0.0f : 0.02f, i % 3 == 0 ? 1.1f : 1.0f,
                 static_cast<uint64_t>(1000 + i), 16 + 2 * i});
  }
  return c;
}

v1::GenerateRequest request_of(const Case& c) {
  v1::GenerateRequest r;
  r.set_text(c.prompt);
  auto* s = r.mutable_sampling();
  s->set_temperature(c.temperature);
  s->set_top_k(c.top_k);
  s->set_top_p(c.top_p);
  s->set_min_p(c.min_p);
  s->set_repetition_penalty(c.repeat_penalty);
  s->set_seed(c.seed);
  r.set_max_tokens(c.max_tokens);
  r.set_ignore_eos(true);
  return r;
}

std::vector<int32_t> reference(CpuModel& m, const Tokenizer& tok, const Case& c) {
  SamplingSpec s;
  s.temperature = c.temperature;
  s.top_k = c.top_k;
  s.top_p = c.top_p;
  s.min_p = c.min_p;
  s.repeat_penalty = c.repeat_penalty;
  s.seed = c.seed;
  return test::reference_generate(m.stage(), tok.encode(c.prompt, true, false), c.max_tokens, s);
}

void expect_concurrent_streams_match(CoordinatorProcess& coord, const std::string& model_name, int n_ctx) {
  const auto cases = cases16();
  std::vector<StreamResult> got(cases.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < cases.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = generate(coord.stub(), request_of(cases[i])); });
  }
  for (auto& t : threads) t.join();

  CpuModelOptions mo;
  mo.n_threads = 1;
  mo.stage.n_ctx = n_ctx;
  auto model = CpuModel::open(model_path(model_name), mo);
  auto tok = Tokenizer::from_gguf(model->file());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + ": " + cases[i].prompt);
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
    ASSERT_TRUE(got[i].has_final);
    EXPECT_EQ(got[i].final.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(got[i].final.usage().generated_tokens(), cases[i].max_tokens);
    EXPECT_EQ(got[i].final.usage().prompt_tokens(), static_cast<int>(tok->encode(cases[i].prompt, true, false).size()));
    EXPECT_EQ(got[i].ids, reference(*model, *tok, cases[i]));
    EXPECT_EQ(got[i].text, coord::valid_utf8(tok->decode(got[i].ids)));
  }
  // Seeded sampling is reproducible: the sampled cases again, one at a time.
  for (size_t i = 1; i < cases.size(); i += 4) {
    const auto again = generate(coord.stub(), request_of(cases[i]));
    ASSERT_TRUE(again.status.ok());
    EXPECT_EQ(again.ids, got[i].ids) << "case " << i;
  }
}

}  // namespace pipellm::test

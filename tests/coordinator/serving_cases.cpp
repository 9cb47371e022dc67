#include "tests/coordinator/serving_cases.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "coordinator/text_stream.h"
#include "engine/runtime/generator.h"
#include "tests/reference_generate.h"

namespace pipellm::test {

namespace v1 = pipellm::v1;

std::vector<Case> cases16() {
  // Even rows greedy, odd rows sampled (seed 1000 + row); max_tokens 16 + 2 * row. Across the
  // rows every parameter takes non-default values, in greedy rows (penalties, discouraging and
  // encouraging repeats: the fixture model's greedy text seldom repeats a token by itself) and
  // in sampled rows (penalties and filters); ServingCases.EverySamplingParameterChangesSomeOutput
  // checks that each of them changes some reference output.
  struct Row {
    const char* prompt;
    float temp;
    int top_k;
    float top_p, min_p, repeat, presence, frequency;
    int last_n;
  };
  const Row rows[16] = {
      // prompt                       temp   top_k top_p  min_p  repeat presence frequency last_n
      {"Hello world",                 0.0f,  0,    1.0f,  0.0f,  1.0f,  0.0f,    0.0f,     64},  // plain greedy
      {"The quick brown fox",         0.75f, 11,   0.9f,  0.02f, 1.0f,  0.0f,    0.0f,     64},  // filters only
      {"Once upon a time",            0.0f,  0,    1.0f,  0.0f,  0.7f,  0.0f,    0.0f,     64},
      {"abc def ghi",                 0.85f, 0,    1.0f,  0.0f,  1.1f,  0.0f,    0.0f,     64},
      {"In the beginning",            0.0f,  0,    1.0f,  0.0f,  1.0f,  0.8f,    0.0f,     64},
      {"numbers 1 2 3 4 5",           1.0f,  20,   1.0f,  0.0f,  1.0f,  0.5f,    0.3f,     64},
      {"lorem ipsum dolor",           0.0f,  0,    1.0f,  0.0f,  1.0f,  0.0f,    0.6f,     16},
      {"What is the capital",         0.9f,  0,    0.8f,  0.0f,  1.0f,  0.0f,    0.5f,     8},
      {"Hello world again",           0.0f,  0,    1.0f,  0.0f,  1.2f,  0.3f,    0.3f,     8},
      {"The quick brown fox again",   0.8f,  0,    1.0f,  0.1f,  1.0f,  0.0f,    0.0f,     64},
      {"Once upon a time again",      0.0f,  0,    1.0f,  0.0f,  1.5f,  0.0f,    0.0f,     0},   // window 0: off
      {"abc def ghi again",           1.2f,  5,    0.95f, 0.05f, 1.1f,  -0.5f,   0.0f,     32},
      {"In the beginning again",      0.0f,  0,    1.0f,  0.0f,  1.0f,  -0.5f,   -0.3f,    16},
      {"numbers 1 2 3 4 5 again",     0.7f,  40,   0.9f,  0.02f, 1.0f,  0.0f,    -0.3f,    64},
      {"lorem ipsum dolor again",     0.0f,  0,    1.0f,  0.0f,  0.9f,  0.0f,    0.2f,     32},
      {"What is the capital again",   1.5f,  0,    0.7f,  0.05f, 1.3f,  0.4f,    0.4f,     16},
  };
  std::vector<Case> c;
  for (int i = 0; i < 16; ++i) {
    const Row& r = rows[i];
    Case x{r.prompt, r.temp, r.top_k, r.top_p, r.min_p, r.repeat, static_cast<uint64_t>(1000 + i), 16 + 2 * i};
    x.presence_penalty = r.presence;
    x.frequency_penalty = r.frequency;
    x.penalty_last_n = r.last_n;
    c.push_back(x);
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
  s->set_presence_penalty(c.presence_penalty);
  s->set_frequency_penalty(c.frequency_penalty);
  s->set_penalty_last_n(c.penalty_last_n);
  s->set_seed(c.seed);
  r.set_max_tokens(c.max_tokens);
  r.set_ignore_eos(true);
  return r;
}

SamplingSpec spec_of(const Case& c) {
  SamplingSpec s;
  s.temperature = c.temperature;
  s.top_k = c.top_k;
  s.top_p = c.top_p;
  s.min_p = c.min_p;
  s.repeat_penalty = c.repeat_penalty;
  s.presence_penalty = c.presence_penalty;
  s.frequency_penalty = c.frequency_penalty;
  s.penalty_last_n = c.penalty_last_n;
  s.seed = c.seed;
  return s;
}

std::vector<int32_t> reference(CpuModel& m, const Tokenizer& tok, const Case& c) {
  return test::reference_generate(m.stage(), tok.encode(c.prompt, true, false), c.max_tokens, spec_of(c));
}

namespace {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

// A float flag value that reads back as the same float.
std::string exact(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

}  // namespace

std::vector<int32_t> cli_generate(const std::string& model_file, int n_ctx, const Case& c,
                                  const std::vector<int32_t>* prompt_ids) {
  TempDir dir;
  std::string prompt = "-p " + shell_quote(c.prompt);
  if (prompt_ids != nullptr) {
    std::ofstream ids(dir.file("prompt.ids"));
    for (int32_t id : *prompt_ids) ids << id << ' ';
    prompt = "--ids-file " + shell_quote(dir.file("prompt.ids"));
  }
  const std::string cmd = std::string(PIPELLM_CLI_BIN) + " generate -m " + shell_quote(model_file) + " --ctx " +
                          std::to_string(n_ctx) + " --threads 1 " + prompt + " --print-ids --ignore-eos -n " +
                          std::to_string(c.max_tokens) + " --temp " + exact(c.temperature) + " --top-k " +
                          std::to_string(c.top_k) + " --top-p " + exact(c.top_p) + " --min-p " + exact(c.min_p) +
                          " --repeat-penalty " + exact(c.repeat_penalty) + " --repeat-last-n " +
                          std::to_string(c.penalty_last_n) + " --presence-penalty " + exact(c.presence_penalty) +
                          " --frequency-penalty " + exact(c.frequency_penalty) + " --seed " + std::to_string(c.seed) +
                          " 2>" + shell_quote(dir.file("stderr"));
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while (p != nullptr && (n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = p != nullptr ? ::pclose(p) : -1;
  std::ifstream err_in(dir.file("stderr"));
  std::stringstream err;
  err << err_in.rdbuf();
  if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
    ADD_FAILURE() << cmd << "\nfailed (wait status " << st << "):\n" << out << err.str();
    return {};
  }
  std::vector<int32_t> ids;
  std::istringstream in(out);
  int32_t id;
  while (in >> id) ids.push_back(id);
  if (!in.eof()) ADD_FAILURE() << cmd << "\nprinted more than ids:\n" << out;
  return ids;
}

void expect_concurrent_streams_match(CoordinatorProcess& coord, const std::string& model_file, int n_ctx) {
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
  auto model = CpuModel::open(model_file, mo);
  auto tok = Tokenizer::from_gguf(model->file());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + ": " + cases[i].prompt);
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
    ASSERT_TRUE(got[i].has_final);
    EXPECT_EQ(got[i].final.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(got[i].final.usage().generated_tokens(), cases[i].max_tokens);
    EXPECT_EQ(got[i].final.usage().prompt_tokens(), static_cast<int>(tok->encode(cases[i].prompt, true, false).size()));
    EXPECT_EQ(got[i].ids, reference(*model, *tok, cases[i])) << "served vs the reference loop";
    EXPECT_EQ(got[i].ids, cli_generate(model_file, n_ctx, cases[i])) << "served vs pipellm generate";
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

// `mpirun -np N pipellm-stage` on the CPU fixture models against the single-process engine:
// greedy tokens identical and logits within 1e-5 relative (np 1, 2, 3), 8 concurrent sequences
// each giving its tokens alone, the --prompt path, and failures that end every rank with an
// error naming the rank within seconds.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>

#include "engine/cpu/cpu_model.h"
#include "engine/runtime/generator.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/unit/model_test_util.h"
#include "tests/reference_generate.h"

namespace pipellm {
namespace {

namespace fs = std::filesystem;
constexpr int kCtx = 128;
constexpr int kChunk = 16;  // prefill chunk of the configs and of the reference

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
  double seconds = 0.0;
};

// Runs `mpirun -np N pipellm-stage ARGS` (as root too, oversubscribed) with a time limit.
RunResult mpirun(int np, const std::string& args, int limit_s = 120) {
  const std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout " + std::to_string(limit_s) +
                          " " PIPELLM_MPIEXEC " --allow-run-as-root --oversubscribe -np " + std::to_string(np) +
                          " " PIPELLM_STAGE_PATH " " + args + " 2>&1";
  RunResult r;
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("popen failed: " + cmd);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

class MpiPipeline : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("pipellm-mpi-" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    // A 4-layer model so that an automatic 3-stage plan has a layer per stage.
    const std::string cmd = std::string(PIPELLM_CLI_PATH) +
                            " mkmodel --arch llama --layers 4 --embd 128 --ff 256 --heads 4 --kv-heads 2 --vocab " +
                            test::model_path("tiny-llama-Q8_0") + " --quant Q8_0 --seed 7 " + four_layers() +
                            " > /dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }
  static std::string four_layers() { return (*dir_ / "four-layers.gguf").string(); }
  static std::string path(const std::string& name) { return (*dir_ / name).string(); }

  // A config of `n` CPU stages (explicit layer ranges when given).
  static std::string config(const std::string& name, const std::string& model, int n, int slots, int micro,
                            int batch_tokens, int chunk, const std::vector<std::pair<int, int>>& layers = {}) {
    std::ofstream out(path(name));
    out << "model: " << model << "\ncontext_length: " << kCtx << "\nmax_sequences: " << slots
        << "\nmicro_batches: " << micro << "\nmax_batch_tokens: " << batch_tokens << "\nprefill_chunk: " << chunk
        << "\nthreads: 1\ntransport: mpi\nstages:\n";
    for (int i = 0; i < n; ++i) {
      out << "  - device: cpu\n";
      if (!layers.empty()) out << "    layers: [" << layers[static_cast<size_t>(i)].first << ", " << layers[static_cast<size_t>(i)].second << "]\n";
    }
    return path(name);
  }

  static std::string requests_path(const std::string& name, const std::vector<std::vector<int32_t>>& prompts,
                              const std::vector<int>& max_tokens) {
    std::ofstream out(path(name));
    for (size_t i = 0; i < prompts.size(); ++i) {
      out << nlohmann::json{{"tokens", prompts[i]}, {"max_tokens", max_tokens[i]}}.dump() << "\n";
    }
    return path(name);
  }

  static fs::path* dir_;
};
fs::path* MpiPipeline::dir_ = nullptr;

struct Reference {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
};

// The single-process engine: generate() for the tokens; the same steps by hand for the logits.
Reference reference(const std::string& model, const std::vector<int32_t>& prompt, int n) {
  CpuModelOptions opt;
  opt.n_threads = 1;
  opt.stage.n_ctx = kCtx;
  auto m = CpuModel::open(model, opt);
  Reference r;
  r.tokens = test::reference_generate(m->stage(), prompt, n, SamplingSpec{}, kChunk);
  const size_t V = static_cast<size_t>(m->config().n_vocab);
  std::vector<float> logits;
  for (size_t i = 0; i < prompt.size(); i += kChunk) {
    const size_t len = std::min(prompt.size() - i, static_cast<size_t>(kChunk));
    const std::vector<int32_t> part(prompt.begin() + static_cast<long>(i), prompt.begin() + static_cast<long>(i + len));
    m->stage().forward(Batch::sequence(part, static_cast<int32_t>(i), 0), logits);
  }
  int pos = static_cast<int>(prompt.size());
  for (int i = 0; i < n; ++i) {
    r.logits.push_back(logits);
    const int32_t t = test::argmax(logits.data(), V);
    if (i + 1 < n) m->stage().forward(Batch::sequence({t}, pos++, 0), logits);
  }
  return r;
}

nlohmann::json read_json(const std::string& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error("no output file " + p);
  return nlohmann::json::parse(in);
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& ref) {
  float scale = 0.0f;
  for (float v : ref) scale = std::max(scale, std::fabs(v));
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(a[i] - ref[i])) / scale);
  return worst;
}

std::vector<int32_t> fixture_prompt(size_t n) {
  auto ids = test::read_ids(test::testdata("ref/tiny-llama-Q8_0.tokens"));
  ids.resize(n);
  return ids;
}

}  // namespace

// Three prompts one after another (one KV slot), greedy, logits returned.
class MpiMatches : public MpiPipeline {
 protected:
  void expect_matches_single_process(int np, const std::string& cfg, const std::string& model, const std::string& tag) {
    const std::vector<std::vector<int32_t>> prompts = {fixture_prompt(1), fixture_prompt(7), fixture_prompt(33)};
    const std::vector<int> n = {6, 8, 5};
    const std::string req = requests_path(tag + ".jsonl", prompts, n);
    const std::string out = path(tag + ".json");
    const RunResult r = mpirun(np, "--config " + cfg + " --requests " + req + " --ignore-eos --logits --quiet --json " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto j = read_json(out);
    EXPECT_EQ(j["ranks"], np);
    ASSERT_EQ(j["requests"].size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      SCOPED_TRACE(tag + " request " + std::to_string(i));
      const Reference ref = reference(model, prompts[i], n[i]);
      const auto& got = j["requests"][i];
      EXPECT_EQ(got["tokens"].get<std::vector<int32_t>>(), ref.tokens);
      EXPECT_EQ(got["finish"], "length");
      const auto logits = got["logits"].get<std::vector<std::vector<float>>>();
      ASSERT_EQ(logits.size(), ref.logits.size());
      // (The prompts share fewer tokens than kMinReusedPrefix: each is fed whole.)
      for (size_t k = 0; k < logits.size(); ++k) EXPECT_LE(max_rel_diff(logits[k], ref.logits[k]), 1e-5) << "token " << k;
    }
  }
};

TEST_F(MpiMatches, OneRank) {
  const std::string model = test::model_path("tiny-llama-Q8_0");
  expect_matches_single_process(1, config("np1.yaml", model, 1, 1, 1, 64, kChunk), model, "np1");
}

TEST_F(MpiMatches, TwoRanks) {
  const std::string model = test::model_path("tiny-llama-Q8_0");
  expect_matches_single_process(2, config("np2.yaml", model, 2, 1, 2, 64, kChunk), model, "np2");
}

TEST_F(MpiMatches, TwoRanksQwen2) {
  const std::string model = test::model_path("tiny-qwen2-Q8_0");
  expect_matches_single_process(2, config("np2q.yaml", model, 2, 1, 2, 64, kChunk), model, "np2q");
}

TEST_F(MpiMatches, ThreeRanksPlanned) {
  expect_matches_single_process(3, config("np3.yaml", four_layers(), 3, 1, 3, 64, kChunk), four_layers(), "np3");
}

TEST_F(MpiMatches, ThreeRanksHeadOnlyTail) {
  const std::string model = test::model_path("tiny-tied-Q8_0");
  expect_matches_single_process(3, config("np3t.yaml", model, 3, 1, 3, 64, kChunk, {{0, 1}, {1, 2}, {2, 2}}), model, "np3t");
}

// 8 sequences of different prompt and output lengths through 3 KV slots and 2 micro-batches,
// prompts prefilled in chunks of 5: each gets the tokens it gets alone.
TEST_F(MpiPipeline, ContinuousBatchingEightSequences) {
  const std::string model = test::model_path("tiny-llama-Q4_K_M");
  const auto all = test::read_ids(test::testdata("ref/tiny-llama-Q4_K_M.tokens"));
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> n;
  for (int i = 0; i < 8; ++i) {
    const size_t start = static_cast<size_t>(3 * i), len = static_cast<size_t>(2 + (i * 5) % 17);
    prompts.emplace_back(all.begin() + static_cast<long>(start), all.begin() + static_cast<long>(start + len));
    n.push_back(3 + (i * 3) % 8);
  }
  const std::string cfg = config("cb.yaml", model, 2, 3, 2, 12, 5);
  const std::string out = path("cb.json");
  const RunResult r = mpirun(2, "--config " + cfg + " --requests " + requests_path("cb.jsonl", prompts, n) +
                                    " --ignore-eos --quiet --json " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = read_json(out);
  ASSERT_EQ(j["requests"].size(), 8u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    EXPECT_EQ(j["requests"][i]["tokens"].get<std::vector<int32_t>>(), reference(model, prompts[i], n[i]).tokens);
  }
  // Sequences shared steps: fewer steps than one per token fed.
  EXPECT_LT(j["stats"]["steps"].get<int>(), j["stats"]["tokens_fed"].get<int>());
}

// The README's command: a text prompt, tokenized on the head, the same tokens as one process.
TEST_F(MpiPipeline, PromptMode) {
  const std::string model = test::model_path("tiny-llama-Q8_0");
  const std::string cfg = config("prompt.yaml", model, 2, 1, 2, 64, kChunk);
  const std::string out = path("prompt.json");
  const RunResult r = mpirun(2, "--config " + cfg + " --prompt 'The jury said' -n 12 --ignore-eos --json " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto f = GgufFile::open(model);
  const auto tok = Tokenizer::from_gguf(*f);
  const auto prompt = tok->encode("The jury said", true, true);
  const Reference ref = reference(model, prompt, 12);
  const auto j = read_json(out);
  EXPECT_EQ(j["requests"][0]["tokens"].get<std::vector<int32_t>>(), ref.tokens);
  EXPECT_EQ(j["requests"][0]["text"].get<std::string>(), tok->decode(ref.tokens));
  // Without --json the head streams the text to stdout.
  const RunResult s = mpirun(2, "--config " + cfg + " --prompt 'The jury said' -n 12 --ignore-eos --quiet");
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_NE(s.output.find(tok->decode(ref.tokens)), std::string::npos) << s.output;
}

// A rank that throws: every rank ends quickly, the message names the rank and the error.
TEST_F(MpiPipeline, FailingRankAbortsAll) {
  const std::string model = test::model_path("tiny-llama-Q8_0");
  const std::string cfg = config("fail.yaml", model, 3, 1, 2, 64, kChunk, {{0, 1}, {1, 2}, {2, 2}});
  for (int rank : {0, 1, 2}) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    const RunResult r = mpirun(3, "--config " + cfg + " --tokens '1 2 3' -n 20 --quiet --fault-rank " + std::to_string(rank) +
                                      " --fault-step 4 --fault-kind throw", 60);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.exit_code, 124) << "timed out: " << r.output;
    EXPECT_LT(r.seconds, 30.0);
    EXPECT_NE(r.output.find("rank " + std::to_string(rank) + " of 3"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("injected fault at step 4"), std::string::npos) << r.output;
  }
}

// A rank killed by a signal (no word, no MPI_Finalize): mpirun ends the others and names it.
TEST_F(MpiPipeline, DyingRankEndsAll) {
  const std::string model = test::model_path("tiny-llama-Q8_0");
  const std::string cfg = config("die.yaml", model, 2, 1, 2, 64, kChunk);
  const RunResult r = mpirun(2, "--config " + cfg + " --tokens '1 2 3' -n 20 --quiet --fault-rank 1 --fault-step 2 --fault-kind kill", 60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.output;
  EXPECT_LT(r.seconds, 30.0);
  EXPECT_NE(r.output.find("rank 1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("signal 9"), std::string::npos) << r.output;
}

TEST_F(MpiPipeline, BrokenModelPathAndRankCount) {
  const std::string cfg = config("broken.yaml", path("missing.gguf"), 2, 1, 2, 64, kChunk);
  RunResult r = mpirun(2, "--config " + cfg + " --tokens '1 2 3' --quiet", 60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("missing.gguf"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank "), std::string::npos) << r.output;

  const std::string two = config("two.yaml", test::model_path("tiny-llama-Q8_0"), 2, 1, 2, 64, kChunk);
  r = mpirun(3, "--config " + two + " --tokens '1 2 3' --quiet", 60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("the config has 2 stages but mpirun started 3 ranks"), std::string::npos) << r.output;
}

}  // namespace pipellm

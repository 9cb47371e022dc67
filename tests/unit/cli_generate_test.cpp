// The `pipellm generate` / `eval` commands as a user runs them: exit codes, messages, outputs.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

struct RunResult {
  int code;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

RunResult run_cli(const std::string& args) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string tag = std::to_string(::getpid());
  const std::string out = (dir / ("pipellm_cli_out_" + tag)).string();
  const std::string err = (dir / ("pipellm_cli_err_" + tag)).string();
  const std::string cmd = std::string(PIPELLM_CLI_PATH) + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

std::string model_arg(const std::string& name) { return "-m " + test::model_path(name); }

// `pipellm --version`: the project's version and what this build reads.
TEST(CliGenerate, VersionNamesTheArchitectures) {
  const RunResult r = run_cli("--version");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("pipellm 0."), std::string::npos) << r.out;
  for (const char* a : {"llama", "gemma3", "gpt-oss", "qwen35moe", "gemma4"}) {
    EXPECT_NE(r.out.find(a), std::string::npos) << a << " in " << r.out;
  }
}

TEST(CliGenerate, UsageErrorsExitWithTwo) {
  const std::string m = model_arg("tiny-llama-Q8_0");
  struct Case {
    std::string args;
    std::string message;
  };
  const Case cases[] = {
      {"-m /nonexistent/model.gguf -p hi", "does not exist"},
      {m + " -p hi --temp abc", "--temp: 'abc' is not a number"},
      {m + " -p hi --top-p 1.5", "--top-p"},
      {m + " -p hi -n -3", "-n: '-3'"},
      {m + " -p hi --threads 0", "--threads"},
      {m + " -p hi --sampler-chain top_k,bogus", "unknown stage 'bogus'"},
      {m + " -p hi --bogus", "unknown option '--bogus'"},
      {m + " -p hi --vram-budget 2GiB", "--vram-budget needs --device cuda"},
      {m + " -p hi --vram-budget lots --device cuda", "--vram-budget"},
      {m + " -p hi --temp", "--temp needs a value"},
      {m, "give exactly one of -p PROMPT and --ids-file F"},
      {m + " -p 'a fairly long prompt that needs more than four tokens' --ctx 4", "raise --ctx"},
  };
  for (const auto& c : cases) {
    const RunResult r = run_cli("generate " + c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\nstderr: " << r.err;
  }
}

TEST(CliGenerate, GreedyIdsMatchTheReference) {
  const std::string name = "tiny-qwen3-Q4_K_M";
  const auto greedy = test::read_greedy(test::testdata("ref/" + name + ".greedy"));
  const RunResult r = run_cli("generate " + model_arg(name) + " --ids-file " +
                              test::testdata("ref/" + name + ".tokens") + " -n 32 --temp 0 --print-ids --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream in(r.out);
  std::vector<int32_t> got;
  for (int32_t v; in >> v;) got.push_back(v);
  size_t checked = 0;
  for (size_t i = 0; i < greedy.ids.size() && greedy.gaps[i] >= 0.1; ++i, ++checked) {
    ASSERT_LT(i, got.size());
    EXPECT_EQ(got[i], greedy.ids[i]) << "step " << i;
  }
  EXPECT_GT(checked, 10u);
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
}

TEST(CliGenerate, TextAndJsonOutput) {
  const std::string m = model_arg("tiny-llama-Q8_0");
  const RunResult a = run_cli("generate " + m + " -p 'Once upon a time' -n 8 --seed 3 --json");
  ASSERT_EQ(a.code, 0) << a.err;
  const auto ja = nlohmann::json::parse(a.out);
  EXPECT_EQ(ja["seed"].get<int>(), 3) << a.out;
  EXPECT_EQ(ja["tokens"].size(), 8u) << a.out;
  EXPECT_TRUE(ja["text"].is_string()) << a.out;
  const RunResult b = run_cli("generate " + m + " -p 'Once upon a time' -n 8 --seed 3 --json");
  const auto jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["tokens"], jb["tokens"]);
  EXPECT_EQ(ja["text"], jb["text"]);
  EXPECT_NE(a.err.find("prompt:"), std::string::npos);
  EXPECT_NE(a.err.find("generation:"), std::string::npos);
}

TEST(CliEval, WritesEveryPositionsLogits) {
  const std::string name = "tiny-llama-F16";
  const std::string out = (std::filesystem::temp_directory_path() / ("pipellm_eval_" + std::to_string(::getpid()))).string();
  const RunResult r = run_cli("eval " + model_arg(name) + " --ids-file " + test::testdata("ref/" + name + ".tokens") +
                              " --logits " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto got = test::read_f32(out);
  std::filesystem::remove(out);
  const auto ref = test::read_f32(test::testdata("ref/" + name + ".logits.f32"));
  ASSERT_EQ(got.size(), ref.size());
  for (size_t p = 0; p < 48; ++p) EXPECT_LT(test::rel_rms(got.data() + p * 1024, ref.data() + p * 1024, 1024), 0.01);
  EXPECT_EQ(run_cli("eval " + model_arg(name) + " --logits " + out).code, 2);  // no --ids-file
}

TEST(CliGenerate, DefaultModelWhenPresent) {
  const std::string path = std::string(PIPELLM_SOURCE_DIR) + "/models/default.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no " << path;
  const RunResult r = run_cli("generate -p hello -n 4 --seed 1");
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST(CliGenerate, ChatWrapsThePromptInTheModelsTemplate) {
  const RunResult none = run_cli("generate " + model_arg("tiny-llama-Q8_0") + " --chat -p hi -n 1");
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("has no tokenizer.chat_template"), std::string::npos) << none.err;

  // A tiny model carrying Qwen3's tokenizer and chat template (ChatML).
  const std::string model =
      (std::filesystem::temp_directory_path() / ("pipellm_chat_" + std::to_string(::getpid()) + ".gguf")).string();
  ASSERT_EQ(run_cli("mkmodel --preset tiny --quant Q8_0 --vocab " + test::testdata("vocab/vocab-qwen3.gguf") + " " +
                    model)
                .code,
            0);
  const RunResult chat = run_cli("generate -m " + model + " --chat -p hi -n 1 --temp 0 --json");
  const std::string text_file = model + ".txt";
  std::ofstream(text_file) << "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
  const RunResult ids = run_cli("tokenize -m " + model + " --special --ids - < " + text_file);
  std::filesystem::remove(model);
  std::filesystem::remove(text_file);
  ASSERT_EQ(chat.code, 0) << chat.err;
  ASSERT_EQ(ids.code, 0) << ids.err;
  const auto expected = nlohmann::json::parse(ids.out).get<std::vector<int>>();
  EXPECT_EQ(expected.size(), 9u) << ids.out;
  EXPECT_EQ(nlohmann::json::parse(chat.out)["n_prompt"].get<size_t>(), expected.size()) << chat.out;
}

}  // namespace
}  // namespace pipellm

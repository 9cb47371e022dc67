// The `pipellm generate` / `eval` commands as a user runs them: exit codes, messages, outputs.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/unit/model_test_util.h"
#include "tests/unit/cli_run.h"

namespace pipellm {
namespace {

using test::RunResult;
using test::run_cli;
using test::slurp;
using test::temp_path;

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
      {m + " -p hi --temp abc", "--temp: ('abc' is not a finite number)"},
      {m + " -p hi --top-p 1.5", "--top-p"},
      {m + " -p hi -n -3", "--n-predict: Value -3 not in range -1"},
      {m + " -p hi --threads -1", "--threads"},
      {m + " -p hi --sampler-chain top_k,bogus", "unknown stage 'bogus'"},
      {m + " -p hi --bogus", "not expected: --bogus"},
      {m + " -p hi --vram-budget 2GiB", "--vram-budget needs --device cuda"},
      {m + " -p hi --vram-budget lots --device cuda", "--vram-budget"},
      {m + " -p hi --temp", "--temp: 1 required"},
      {m, "give exactly one of -p PROMPT"},
      {m + " -p hi --chat-template vicuna --chat", "neither a built-in template"},
      {m + " -p 'a fairly long prompt that needs more than four tokens' --ctx 4", "raise -c/--ctx-size"},
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


std::string write_temp(const std::string& tag, const std::string& text) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("pipellm_cli_" + tag + std::to_string(::getpid()))).string();
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// llama.cpp's spellings (flags/llama_flags.h) give exactly what the long-standing ones give.
TEST(CliGenerate, LlamaSpellingsGiveTheSameOutput) {
  const std::string m = test::model_path("tiny-llama-Q8_0");
  const std::string prompt = write_temp("prompt", "Once upon a time");
  const RunResult a = run_cli("generate -m " + m + " -p 'Once upon a time' -n 8 --seed 3 --temp 0.7 --top-k 20 --ctx 256 --json");
  const RunResult b = run_cli("generate --model=" + m + " -f " + prompt +
                              " -n 8 -s 3 --temperature 0.7 --top-k=20 -c 256 -ngl 0 -fa -t 1 --jinja --json");
  std::filesystem::remove(prompt);
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(nlohmann::json::parse(a.out)["tokens"], nlohmann::json::parse(b.out)["tokens"]);
}

// -n -1: until end of generation or, without one, the end of the context.
TEST(CliGenerate, NPredictMinusOneRunsToTheContext) {
  const RunResult r = run_cli("generate " + model_arg("tiny-llama-Q8_0") + " -p 'Once upon a time' -c 40 -n -1 --ignore-eos --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["n_prompt"].get<int>() + j["n_generated"].get<int>(), 40) << r.out;
  // --seed -1 is a random seed, reported.
  const RunResult s = run_cli("generate " + model_arg("tiny-llama-Q8_0") + " -p hi -n 2 --seed -1 --json");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_TRUE(nlohmann::json::parse(s.out)["seed"].is_number_unsigned()) << s.out;
}

// --grammar and -j constrain sampling at temperature 1: every seed's output matches.
TEST(CliGenerate, GrammarAndJsonSchemaConstrainTheOutput) {
  const std::string m = model_arg("tiny-qwen3-Q4_K_M");
  for (int seed = 1; seed <= 4; ++seed) {
    const RunResult g = run_cli("generate " + m + " -p hi --temp 1 --seed " + std::to_string(seed) +
                                " --grammar 'root ::= (\"yes\" | \"no\") \".\"' --json");
    ASSERT_EQ(g.code, 0) << g.err;
    const std::string text = nlohmann::json::parse(g.out)["text"];
    EXPECT_TRUE(text == "yes." || text == "no.") << text;
    const RunResult j = run_cli("generate " + m + " -p hi --temp 1 --seed " + std::to_string(seed) +
                                " -j '{\"type\":\"integer\",\"minimum\":-5,\"maximum\":250}' --json");
    ASSERT_EQ(j.code, 0) << j.err;
    const std::string num = nlohmann::json::parse(j.out)["text"];
    const auto v = nlohmann::json::parse(num, nullptr, false);
    ASSERT_TRUE(v.is_number_integer()) << num;
    EXPECT_GE(v.get<int>(), -5);
    EXPECT_LE(v.get<int>(), 250);
  }
}

// -cnv: each line of input is a user turn; each answer is what a one-shot generation of the
// whole conversation, rendered by the template, gives (greedy).
TEST(CliGenerate, ConversationAnswersEachTurnWithTheWholeHistory) {
  const std::string model = write_temp("chatmodel.gguf", "");
  ASSERT_EQ(run_cli("mkmodel --preset tiny --quant Q8_0 --vocab " + test::testdata("vocab/vocab-qwen3.gguf") + " " + model).code, 0);
  const std::string input = write_temp("chatin", "hi\nwhat now\n");
  const RunResult chat = run_cli("generate -m " + model + " -cnv -sys 'Be brief: one short sentence, plain words, no lists and no questions back.' --temp 0 -n 6 < " + input);
  ASSERT_EQ(chat.code, 0) << chat.err;
  // The reference: the rendered conversation as a raw prompt, turn by turn.
  auto answer = [&](const std::vector<ChatMessage>& msgs) {
    const auto tmpl = Tokenizer::from_gguf(*GgufFile::open(model))->chat_template();
    const std::string file = write_temp("chatprompt", apply_chat_template(*tmpl, msgs, true, "", "<|im_end|>"));
    const RunResult r = run_cli("generate -m " + model + " -f " + file + " --temp 0 -n 6 --json");
    std::filesystem::remove(file);
    EXPECT_EQ(r.code, 0) << r.err;
    return nlohmann::json::parse(r.out)["text"].get<std::string>();
  };
  std::vector<ChatMessage> msgs = {{"system", "Be brief: one short sentence, plain words, no lists and no questions back."}, {"user", "hi"}};
  const std::string first = answer(msgs);
  msgs.push_back({"assistant", first});
  msgs.push_back({"user", "what now"});
  const std::string second = answer(msgs);
  std::filesystem::remove(model);
  std::filesystem::remove(input);
  EXPECT_EQ(chat.out, first + "\n" + second + "\n");
  // The second turn re-read none of the first: its prompt starts with what the cache holds.
  EXPECT_EQ(chat.err.find("of them from the cache") == std::string::npos, false) << chat.err;
  EXPECT_EQ(chat.err.find(" 0 of them from the cache"), std::string::npos) << chat.err;
}

}  // namespace
}  // namespace pipellm

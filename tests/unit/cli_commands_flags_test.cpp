// Every `pipellm` sub-command parses with CLI11 (flags::parse), table-driven: for each command,
// --help exits 0 and lists every flag, a bad value exits 2 with a message naming the flag, and
// `--flag=value` gives exactly what `--flag value` gives (stdout and any file written). The
// commands' behaviour is tested in their own suites (TokenizerCli, Mkmodel, PipelinePlanCli,
// Requantize, CliGenerate, CliEval).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/test_data.h"
#include "tests/unit/cli_run.h"

namespace pipellm {
namespace {

using test::RunResult;
using test::run_cli;
using test::slurp;
using test::temp_path;

namespace fs = std::filesystem;

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

// The inputs of `pipellm import-raw` (tools/README.md's export format): a 3-token vocabulary, an
// F32 embedding, norm and output head of width 64.
struct RawExport {
  std::string manifest, weights, tokenizer;
};

RawExport write_raw_export() {
  constexpr int kEmbd = 64;
  std::vector<float> embd(3 * kEmbd), norm(kEmbd), head(3 * kEmbd);
  for (size_t i = 0; i < embd.size(); ++i) embd[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
  for (size_t i = 0; i < norm.size(); ++i) norm[i] = 1.0f + 0.001f * static_cast<float>(i);
  for (size_t i = 0; i < head.size(); ++i) head[i] = 0.02f * static_cast<float>(i % 31) - 0.3f;
  RawExport e{temp_path("manifest.json"), temp_path("weights.bin"), temp_path("tokenizer.json")};
  std::ofstream w(e.weights, std::ios::binary);
  nlohmann::json tensors = nlohmann::json::array();
  size_t offset = 0;
  for (const auto& [name, v, shape] :
       {std::tuple<const char*, const std::vector<float>&, std::vector<int>>{"token_embd.weight", embd, {3, kEmbd}},
        {"output_norm.weight", norm, {kEmbd}},
        {"output.weight", head, {3, kEmbd}}}) {
    w.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
    tensors.push_back({{"name", name}, {"dtype", "f32"}, {"shape", shape}, {"offset", offset}, {"nbytes", v.size() * 4}});
    offset += v.size() * 4;
  }
  const nlohmann::json manifest = {
      {"arch", "llama"}, {"name", "test"}, {"n_vocab", 3}, {"n_embd", kEmbd}, {"n_layer", 1}, {"n_head", 2},
      {"n_head_kv", 1}, {"head_dim", 32}, {"n_ff", 128}, {"n_ctx", 256}, {"rope_base", 10000.0}, {"rms_eps", 1e-5},
      {"bos_id", 0}, {"eos_id", 0}, {"add_bos", true}, {"tokenizer_pre", "gpt-2"}, {"tensors", tensors}};
  std::ofstream(e.manifest) << manifest.dump();
  const nlohmann::json tokenizer = {
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"added_tokens", nlohmann::json::array({{{"id", 0}, {"content", "<|endoftext|>"}, {"special", true}}})},
      {"model",
       {{"type", "BPE"},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", {{"<|endoftext|>", 0}, {"a", 1}, {"b", 2}}},
        {"merges", nlohmann::json::array({"a b"})}}}};
  std::ofstream(e.tokenizer) << tokenizer.dump();
  return e;
}

// One command's rows. In the command lines, @OUT stands for a file the command writes (compared
// between the two spellings as well as stdout).
struct Equivalent {
  std::string spaced;  // `--flag value`
  std::string joined;  // `--flag=value`
};
struct BadValue {
  std::string args;
  std::string message;  // what stderr must hold: the flag's name
};
struct CommandCase {
  std::string name;
  std::vector<std::string> flags;  // every flag, as --help must list it
  std::vector<BadValue> bad;
  std::vector<Equivalent> same;
};

class CliCommandsFlags : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    raw_ = new RawExport(write_raw_export());
    plan_yaml_ = new std::string(temp_path("plan.yaml"));
    std::ofstream(*plan_yaml_) << "model: " << test::model_path("tiny-llama-Q8_0")
                               << "\nstages:\n  - {device: cpu, memory: 1GiB}\n  - {device: cpu, memory: 1GiB}\n";
    ids_ = new std::string(temp_path("ids.txt"));
    std::ofstream(*ids_) << "1 50 300 700";  // the tiny models' vocabulary has 1024 tokens
  }
  static void TearDownTestSuite() {
    for (const std::string& p : {raw_->manifest, raw_->weights, raw_->tokenizer, *plan_yaml_, *ids_}) fs::remove(p);
    delete raw_;
    delete plan_yaml_;
    delete ids_;
  }

  static std::vector<CommandCase> cases() {
    const std::string f32 = test::model_path("tiny-llama-F32");
    const std::string q8 = test::model_path("tiny-llama-Q8_0");
    const std::string vocab = test::testdata("vocab/vocab-llama3.gguf");
    const std::string& y = *plan_yaml_;
    const std::string jsonl = test::testdata("tokenizer/qwen3.jsonl");
    const std::string qwen3_vocab = test::testdata("vocab/vocab-qwen3.gguf");
    const std::string raw = "--manifest " + raw_->manifest + " --weights " + raw_->weights + " --tokenizer " + raw_->tokenizer;
    const std::string raw_joined =
        "--manifest=" + raw_->manifest + " --weights=" + raw_->weights + " --tokenizer=" + raw_->tokenizer;
    return {
        {"inspect",
         {"-m,--model", "--json", "--tensor", "--f32"},
         {{f32 + " --f32 x.f32", "--tensor"}, {f32 + " --tensor", "--tensor"}, {f32 + " --bogus", "--bogus"}},
         {{f32 + " --tensor blk.0.attn_q.weight", f32 + " --tensor=blk.0.attn_q.weight"},
          {f32 + " --tensor blk.1.ffn_up.weight --f32 @OUT", f32 + " --tensor=blk.1.ffn_up.weight --f32=@OUT"},
          {"--model " + q8 + " --json", "--model=" + q8 + " --json"},
          {"-m " + q8, q8}}},
        {"tokenize",
         {"-m,--model", "-p,--prompt", "-f,--file", "--stdin", "--jsonl", "--ids", "--no-bos", "--special"},
         {{"-m " + vocab + " -f /no/such/file", "--file"},
          {"--bogus -m " + vocab + " hi", "--bogus"},
          {"--modle " + vocab + " hi", "--modle"},  // not "--model is required": the misspelling
          {"-m " + vocab, "-p TEXT"},
          {"-m " + vocab + " -p hi there", "-p TEXT"}},
         {{"-m " + vocab + " --ids -p 'Hello world'", "--model=" + vocab + " --ids --prompt='Hello world'"},
          {"--model " + vocab + " 'Hello world'", "--model=" + vocab + " 'Hello world'"},
          {"-m " + vocab + " --ids --no-bos --special '<|eot_id|>'", "-m " + vocab + " --ids --no-bos --special -p '<|eot_id|>'"},
          {"-m " + qwen3_vocab + " --jsonl " + jsonl, "-m " + qwen3_vocab + " --jsonl=" + jsonl}}},
        {"mkmodel",
         {"--preset", "--tiny", "--arch", "--layers", "--embd", "--ff", "--heads", "--kv-heads", "--head-dim",
          "--experts", "--experts-used", "--expert-ff", "--window", "--vocab-size", "--ctx", "--tied", "--quant",
          "--vocab", "-s,--seed", "-t,--threads"},
         {{"--layers 0 @OUT", "--layers"},
          {"--preset tiny --quant Q9_K @OUT", "--quant"},
          {"--preset nope @OUT", "--preset"},
          {"--preset tiny --arch falcon @OUT", "--arch"},
          {"--tiny @OUT", "--preset"},
          {"--preset tiny --threads 0 @OUT", "--threads"},
          {"--preset tiny --seed -1 @OUT", "--seed"}},
         {{"--preset tiny --layers 1 --quant Q8_0 --seed 7 --threads 2 @OUT",
           "--preset=tiny --layers=1 --quant=Q8_0 --seed=7 --threads=2 @OUT"},
          {"--arch qwen2 --layers 1 --embd 64 --ff 64 --heads 2 --kv-heads 1 --vocab-size 300 --ctx 128 --tied -s 3 "
           "-t 1 --quant F16 @OUT",
           "--arch=qwen2 --layers=1 --embd=64 --ff=64 --heads=2 --kv-heads=1 --vocab-size=300 --ctx=128 --tied "
           "--seed=3 --threads=1 --quant=F16 @OUT"}}},
        {"plan",
         {"--config", "-m,--model"},
         {{"--config /no/such.yaml", "--config"}, {"", "--config"}, {"--confg " + y, "--confg"}},
         {{"--config " + y, "--config=" + y}, {"--config " + y + " -m " + q8, "--config=" + y + " --model=" + q8}}},
        {"import-raw",
         {"--manifest", "--weights", "--tokenizer", "--quant"},
         {{raw + " --quant Q4_K @OUT", "--quant"},
          {"--manifest " + raw_->manifest + " --tokenizer " + raw_->tokenizer + " @OUT", "--weights"}},
         {{raw + " --quant F16 @OUT", raw_joined + " --quant=F16 @OUT"}, {raw + " @OUT", raw_joined + " @OUT"}}},
        {"quantize",
         {"--allow-requantize", "-t,--threads"},
         {{"--threads 0 " + f32 + " @OUT Q8_0", "--threads"},
          {f32 + " @OUT Q8_0 zero", "NTHREADS"},
          {f32 + " @OUT Q9_K", "'Q9_K'"},
          {f32, "IN.gguf [OUT.gguf] TYPE"}},
         {{"--threads 2 " + f32 + " @OUT Q4_K_M", "--threads=2 " + f32 + " @OUT Q4_K_M"},
          {"-t 1 " + f32 + " @OUT Q8_0", "--threads=1 " + f32 + " @OUT Q8_0"},
          {"--allow-requantize " + q8 + " @OUT Q4_0 1", "--allow-requantize --threads=1 " + q8 + " @OUT Q4_0"}}},
        {"generate",
         {"-m,--model", "-p,--prompt", "-f,--file", "-n,--n-predict,--max-tokens", "--temp,--temperature", "-s,--seed", "--ids-file",
          "--print-ids", "--json", "--chat", "--no-special", "--kv-type", "--vram-budget"},
         {{"-m " + q8 + " -p hi --top-k -2", "--top-k"}, {"-m " + q8 + " -p hi --kv-type q9", "--kv-type"}},
         {{"-m " + q8 + " --ids-file " + *ids_ + " -n 6 --temp 0 --print-ids",
           "--model=" + q8 + " --ids-file=" + *ids_ + " --n-predict=6 --temp=0 --print-ids"}}},
        {"eval",
         {"-m,--model", "--ids-file", "--logits", "--batch", "-c,--ctx-size,--ctx"},
         {{"-m " + q8 + " --ids-file " + *ids_ + " --logits @OUT --batch 0", "--batch"}},
         {{"-m " + q8 + " --ids-file " + *ids_ + " --logits @OUT --batch 2",
           "--model=" + q8 + " --ids-file=" + *ids_ + " --logits=@OUT --batch=2"}}},
        {"bench",
         {"-m,--model", "-p,--n-prompt", "-n,--n-gen", "-r,--repetitions,--reps", "--json"},
         {{"-m " + q8 + " -n 0", "--n-gen"}, {"-m " + q8 + " --bogus", "--bogus"}},
         {}},  // timings: no two runs print the same
    };
  }

  static RawExport* raw_;
  static std::string* plan_yaml_;
  static std::string* ids_;
};

RawExport* CliCommandsFlags::raw_ = nullptr;
std::string* CliCommandsFlags::plan_yaml_ = nullptr;
std::string* CliCommandsFlags::ids_ = nullptr;

TEST_F(CliCommandsFlags, TopLevelHelpListsEveryCommand) {
  const RunResult r = run_cli("--help");
  EXPECT_EQ(r.code, 0) << r.err;
  for (const CommandCase& c : cases()) EXPECT_NE(r.out.find("  " + c.name + " "), std::string::npos) << c.name;
  const RunResult unknown = run_cli("frobnicate");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("unknown command 'frobnicate'"), std::string::npos) << unknown.err;
}

TEST_F(CliCommandsFlags, HelpListsEveryFlag) {
  for (const CommandCase& c : cases()) {
    for (const char* help : {" --help", " -h"}) {
      const RunResult r = run_cli(c.name + help);
      EXPECT_EQ(r.code, 0) << c.name << help << "\n" << r.err;
      EXPECT_NE(r.out.find("Usage: pipellm " + c.name), std::string::npos) << c.name << "\n" << r.out;
      for (const std::string& flag : c.flags) {
        EXPECT_NE(r.out.find("  " + flag + " "), std::string::npos) << c.name << ": " << flag << " not in\n" << r.out;
      }
    }
  }
}

TEST_F(CliCommandsFlags, BadValuesExitTwoNamingTheFlag) {
  for (const CommandCase& c : cases()) {
    for (const BadValue& b : c.bad) {
      const std::string out = temp_path("bad.gguf");
      const std::string line = c.name + " " + replace_all(b.args, "@OUT", out);
      const RunResult r = run_cli(line);
      EXPECT_EQ(r.code, 2) << line << "\n" << r.err;
      EXPECT_NE(r.err.find(b.message), std::string::npos) << line << "\nstderr: " << r.err;
      EXPECT_FALSE(fs::exists(out)) << line << ": a usage error writes nothing";
      fs::remove(out);
    }
  }
}

TEST_F(CliCommandsFlags, FlagEqualsValueIsFlagSpaceValue) {
  for (const CommandCase& c : cases()) {
    for (const Equivalent& e : c.same) {
      const std::string out = temp_path("same");
      std::string got[2][2];  // [spelling][stdout, file]
      for (int k = 0; k < 2; ++k) {
        const std::string line = c.name + " " + replace_all(k == 0 ? e.spaced : e.joined, "@OUT", out);
        const RunResult r = run_cli(line);
        ASSERT_EQ(r.code, 0) << line << "\n" << r.err;
        got[k][0] = r.out;
        got[k][1] = slurp(out);
        fs::remove(out);
      }
      EXPECT_FALSE(got[0][0].empty() && got[0][1].empty()) << c.name << " " << e.spaced << ": no output to compare";
      EXPECT_EQ(got[0][0], got[1][0]) << c.name << ": stdout of\n  " << e.spaced << "\n  " << e.joined;
      EXPECT_TRUE(got[0][1] == got[1][1]) << c.name << ": the file written by\n  " << e.spaced << "\n  " << e.joined;
    }
  }
}

// quantize keeps llama-quantize's positional form: IN TYPE writes ggml-model-TYPE.gguf beside IN,
// and NTHREADS after TYPE means what -t means.
TEST_F(CliCommandsFlags, QuantizePositionalsAsLlamaQuantize) {
  const std::string dir = temp_path("dir");
  fs::create_directories(dir);
  const std::string in = dir + "/in.gguf";
  fs::copy_file(test::model_path("tiny-llama-F32"), in);
  RunResult r = run_cli("quantize " + in + " Q8_0 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir + "/ggml-model-Q8_0.gguf"));
  EXPECT_NE(r.err.find(", 1 threads"), std::string::npos) << r.err;
  r = run_cli("quantize --allow-requantize " + in + " " + dir + "/b.gguf Q8_0 --threads=1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(slurp(dir + "/ggml-model-Q8_0.gguf"), slurp(dir + "/b.gguf"));
  EXPECT_EQ(run_cli("quantize " + in + " " + dir + "/c.gguf Q8_0 1 extra").code, 2);
  EXPECT_EQ(run_cli("quantize " + in + " " + in + " Q8_0").code, 2);  // OUT is IN
  fs::remove_all(dir);
}

// tokenize takes llama-tokenize's ways of giving the text (-p, -f, --stdin) beside TEXT and -.
TEST_F(CliCommandsFlags, TokenizeTextSources) {
  const std::string vocab = test::testdata("vocab/vocab-llama3.gguf");
  const std::string text = temp_path("text.txt");
  std::ofstream(text, std::ios::binary) << "Hello world";
  const std::string expected = "[128000,9906,1917]\n";
  EXPECT_EQ(run_cli("tokenize -m " + vocab + " --ids 'Hello world'").out, expected);
  EXPECT_EQ(run_cli("tokenize -m " + vocab + " --ids -p 'Hello world'").out, expected);
  EXPECT_EQ(run_cli("tokenize -m " + vocab + " --ids -f " + text).out, expected);
  EXPECT_EQ(run_cli("tokenize -m " + vocab + " --ids --file=" + text).out, expected);
  EXPECT_EQ(run_cli("tokenize -m " + vocab + " --ids --stdin < " + text).out, expected);
  EXPECT_EQ(run_cli("tokenize -m " + vocab + " --ids - < " + text).out, expected);
  EXPECT_EQ(run_cli("tokenize -m " + vocab + " --ids -p hi -f " + text).code, 2);  // two texts
  fs::remove(text);
}

}  // namespace
}  // namespace pipellm

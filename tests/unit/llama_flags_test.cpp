// llama.cpp's flags (flags/llama_flags.h), table-driven: each row is a command line as a
// llama.cpp user types it and the settings it must produce, written out by hand from llama.cpp's
// documented meaning of the flag; bad values are refused naming the flag. The built-in chat
// templates render as the family renderers of engine/tokenizer/chat_template.cpp.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "engine/tokenizer/chat_template.h"
#include "flags/builtin_chat_templates.h"
#include "flags/gpu_flags.h"
#include "flags/offload_flags.h"
#include "flags/llama_flags.h"

namespace pipellm::flags {
namespace {

struct Parsed {
  SamplingFlags s;
  ModelFlags m;
  ChatFlags c;
  ExpertPlacementFlags e;
  double cpu_rows = 0.0;
  GpuSplitFlags g;
  int ubatch = 0;
  std::optional<int> exit;
  std::string err;
};

Parsed parse_line(std::vector<std::string> args, bool cuda_built = true) {
  Parsed p;
  CLI::App app{"test"};
  add_sampling_flags(app, p.s);
  add_model_flags(app, p.m, cuda_built, /*parallel=*/true);
  add_chat_flags(app, p.c);
  add_expert_flags(app, p.e);
  add_cpu_rows_flag(app, p.cpu_rows);
  add_gpu_split_flags(app, p.g);
  add_ubatch_flag(app, p.ubatch);
  add_accepted_llama_flags(app, /*server=*/true);
  args.insert(args.begin(), "prog");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  testing::internal::CaptureStderr();
  testing::internal::CaptureStdout();
  p.exit = parse(app, static_cast<int>(argv.size()), argv.data());
  (void)testing::internal::GetCapturedStdout();
  p.err = testing::internal::GetCapturedStderr();
  return p;
}

std::string temp_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("pipellm_flags_" + std::to_string(::getpid()) + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(LlamaFlags, EachFlagMeansWhatItMeansInLlamaCpp) {
  const std::string prompt_file = temp_file("prompt.txt", "from a file\n");
  const std::string grammar_file = temp_file("g.gbnf", "root ::= \"yes\" | \"no\"\n");
  struct Row {
    std::vector<std::string> args;
    std::function<void(const Parsed&)> check;
  };
  const Row rows[] = {
      {{"-m", "x.gguf"}, [](const Parsed& p) { EXPECT_EQ(p.m.model, "x.gguf"); }},
      {{"--model=x.gguf"}, [](const Parsed& p) { EXPECT_EQ(p.m.model, "x.gguf"); }},
      {{"-c", "512"}, [](const Parsed& p) { EXPECT_EQ(p.m.ctx_size, 512); }},
      {{"--ctx-size", "1024"}, [](const Parsed& p) { EXPECT_EQ(p.m.ctx_size, 1024); }},
      {{"--ctx-size=2048"}, [](const Parsed& p) { EXPECT_EQ(p.m.ctx_size, 2048); }},
      {{"-t", "3"}, [](const Parsed& p) { EXPECT_EQ(p.m.threads, 3); }},
      // -np: llama-server's slots share -c; --slots: each has the whole -c; -np -1: auto.
      {{"-np", "8"},
       [](const Parsed& p) {
         EXPECT_EQ(p.m.parallel, 8);
         EXPECT_TRUE(p.m.ctx_shared);
       }},
      {{"--parallel", "4"}, [](const Parsed& p) { EXPECT_EQ(p.m.parallel, 4); }},
      {{"--slots", "4"},
       [](const Parsed& p) {
         EXPECT_EQ(p.m.parallel, 4);
         EXPECT_FALSE(p.m.ctx_shared);
       }},
      {{"-np", "-1"},
       [](const Parsed& p) {
         EXPECT_EQ(p.m.parallel, 0);
         EXPECT_FALSE(p.m.ctx_shared);
       }},
      {{"-ngl", "99"},
       [](const Parsed& p) {
         EXPECT_EQ(p.m.device, "cuda");
         EXPECT_EQ(p.m.n_gpu_layers, 99);  // at most 99 resident: every layer of a smaller model
       }},
      {{"-ngl", "all"}, [](const Parsed& p) { EXPECT_FALSE(p.m.n_gpu_layers.has_value()); }},
      {{"-ngl=99"}, [](const Parsed& p) { EXPECT_EQ(p.m.device, "cuda"); }},
      {{"--n-gpu-layers", "all"}, [](const Parsed& p) { EXPECT_EQ(p.m.device, "cuda"); }},
      {{"-ngl", "0"}, [](const Parsed& p) { EXPECT_EQ(p.m.device, "cpu"); }},
      {{"--device", "cuda:1"}, [](const Parsed& p) { EXPECT_EQ(p.m.device, "cuda:1"); }},
      {{"--device", "cuda:1", "-ngl", "4"},
       [](const Parsed& p) {
         EXPECT_EQ(p.m.device, "cuda:1");
         EXPECT_EQ(p.m.n_gpu_layers, 4);
       }},
      {{"-ngl", "4", "--device", "cuda:1"}, [](const Parsed& p) { EXPECT_EQ(p.m.device, "cuda:1"); }},
      {{"-fa"}, [](const Parsed& p) { EXPECT_EQ(p.m.flash_attn, "on"); }},
      {{"-cmoe"}, [](const Parsed& p) { EXPECT_TRUE(p.e.cpu_moe); }},
      {{"--n-cpu-moe", "12"}, [](const Parsed& p) { EXPECT_EQ(p.e.n_cpu_moe, 12); }},
      {{"-cmoe", "--expert-cache", "1.5GiB"}, [](const Parsed& p) { EXPECT_EQ(p.e.cache_bytes, uint64_t{3} << 29); }},
      {{"-ngl", "16", "--cpu-rows", "0.4"}, [](const Parsed& p) { EXPECT_DOUBLE_EQ(p.cpu_rows, 0.4); }},
      {{"-ngl", "16", "--cpu-rows=auto"}, [](const Parsed& p) { EXPECT_LT(p.cpu_rows, 0.0); }},
      // Several GPUs (engine/pipeline/gpu_split.h): llama.cpp's device names and split flags.
      {{"-dev", "CUDA0,CUDA1"}, [](const Parsed& p) { EXPECT_EQ(p.m.device, "cuda:0,cuda:1"); }},
      {{"--device", "none"}, [](const Parsed& p) { EXPECT_EQ(p.m.device, "cpu"); }},
      {{"-dev", "cuda:1", "-ngl", "99"}, [](const Parsed& p) { EXPECT_EQ(p.m.device, "cuda:1"); }},
      {{"-sm", "none", "-mg", "1"},
       [](const Parsed& p) {
         EXPECT_EQ(p.g.split_mode, SplitMode::None);
         EXPECT_EQ(p.g.main_gpu, 1);
       }},
      {{"--split-mode=layer"}, [](const Parsed& p) { EXPECT_EQ(p.g.split_mode, SplitMode::Layer); }},
      {{"-ts", "3,1"}, [](const Parsed& p) { EXPECT_EQ(p.g.tensor_split, (std::vector<double>{3, 1})); }},
      {{"--tensor-split", "1/2/1"}, [](const Parsed& p) { EXPECT_EQ(p.g.tensor_split, (std::vector<double>{1, 2, 1})); }},
      // llama-server command lines: -ub sets the step size, -c 0 the model's context; -b,
      // --cache-reuse, --mlock, --no-mmap, -cb, --metrics, --no-webui are accepted.
      {{"-ub", "1024", "-b", "2048", "--cache-reuse", "256", "--mlock", "--no-mmap", "-cb", "--metrics", "--no-webui"},
       [](const Parsed& p) { EXPECT_EQ(p.ubatch, 1024); }},
      {{"-c", "0"},
       [](const Parsed& p) {
         EXPECT_EQ(p.m.ctx_size, 0);
         EXPECT_TRUE(p.m.ctx_from_model);
       }},
      {{"-c", "512"}, [](const Parsed& p) { EXPECT_FALSE(p.m.ctx_from_model); }},
      {{"-ncmoe=3", "-m", "x.gguf"},
       [](const Parsed& p) {
         EXPECT_EQ(p.e.n_cpu_moe, 3);
         EXPECT_FALSE(p.e.cpu_moe);
       }},
      {{"-ot", "blk\\.0\\.=CUDA0,exps=CPU", "-m", "x.gguf", "-ot", "ffn_down_exps=cpu"},
       [](const Parsed& p) {
         ASSERT_EQ(p.e.overrides.size(), 3u);
         EXPECT_EQ(p.e.overrides[0].pattern, "blk\\.0\\.");
         EXPECT_FALSE(p.e.overrides[0].host);
         EXPECT_EQ(p.e.overrides[1].pattern, "exps");
         EXPECT_TRUE(p.e.overrides[1].host);
         EXPECT_EQ(p.e.overrides[2].pattern, "ffn_down_exps");
         EXPECT_EQ(p.m.model, "x.gguf");
       }},
      {{"-fa", "-n", "5"},
       [](const Parsed& p) {
         EXPECT_EQ(p.m.flash_attn, "on");
         EXPECT_EQ(p.s.n_predict, 5);
       }},
      {{"-fa", "off"}, [](const Parsed& p) { EXPECT_EQ(p.m.flash_attn, "off"); }},
      {{"-ctk", "q8_0", "-ctv", "q4_0"},
       [](const Parsed& p) {
         EXPECT_EQ(p.m.cache_type_k, TensorType::Q8_0);
         EXPECT_EQ(p.m.cache_type_v, TensorType::Q4_0);
       }},
      {{"--cache-type-k=f32"}, [](const Parsed& p) { EXPECT_EQ(p.m.cache_type_k, TensorType::F32); }},
      {{"-n", "-1"}, [](const Parsed& p) { EXPECT_EQ(p.s.n_predict, -1); }},
      {{"--n-predict", "64"}, [](const Parsed& p) { EXPECT_EQ(p.s.n_predict, 64); }},
      {{}, [](const Parsed& p) {
         EXPECT_FALSE(p.s.n_predict.has_value());
         EXPECT_FALSE(p.s.temperature.has_value());
         EXPECT_FALSE(p.s.seed.has_value());
         EXPECT_EQ(p.m.device, "cpu");
         EXPECT_EQ(p.m.flash_attn, "auto");
       }},
      {{"--temp", "0"}, [](const Parsed& p) { EXPECT_EQ(p.s.temperature, 0.0f); }},
      {{"--temperature", "0.7"}, [](const Parsed& p) { EXPECT_FLOAT_EQ(*p.s.temperature, 0.7f); }},
      {{"--top-k", "20", "--top-p", "0.9", "--min-p", "0.1"},
       [](const Parsed& p) {
         EXPECT_EQ(p.s.top_k, 20);
         EXPECT_FLOAT_EQ(*p.s.top_p, 0.9f);
         EXPECT_FLOAT_EQ(*p.s.min_p, 0.1f);
       }},
      {{"--repeat-penalty", "1.1", "--repeat-last-n", "32"},
       [](const Parsed& p) {
         EXPECT_FLOAT_EQ(*p.s.repeat_penalty, 1.1f);
         EXPECT_EQ(p.s.repeat_last_n, 32);
       }},
      {{"--presence-penalty", "0.5", "--frequency-penalty", "-0.5"},
       [](const Parsed& p) {
         EXPECT_FLOAT_EQ(*p.s.presence_penalty, 0.5f);
         EXPECT_FLOAT_EQ(*p.s.frequency_penalty, -0.5f);
       }},
      {{"-s", "42"}, [](const Parsed& p) { EXPECT_EQ(p.s.seed, 42); }},
      {{"--seed", "-1"}, [](const Parsed& p) { EXPECT_EQ(p.s.seed, -1); }},
      {{"--samplers", "min_p;temperature"}, [](const Parsed& p) { EXPECT_EQ(p.s.samplers, "min_p;temperature"); }},
      {{"--ignore-eos"}, [](const Parsed& p) { EXPECT_TRUE(p.s.ignore_eos); }},
      {{"--grammar", "root ::= \"a\""}, [](const Parsed& p) { EXPECT_EQ(p.s.grammar, "root ::= \"a\""); }},
      {{"--grammar-file", grammar_file}, [](const Parsed& p) { EXPECT_EQ(p.s.grammar, "root ::= \"yes\" | \"no\"\n"); }},
      {{"-j", "{\"type\":\"integer\"}"}, [](const Parsed& p) { EXPECT_EQ(p.s.json_schema, "{\"type\":\"integer\"}"); }},
      {{"-p", "Hello"},
       [](const Parsed& p) {
         EXPECT_TRUE(p.c.have_prompt);
         EXPECT_EQ(p.c.prompt, "Hello");
       }},
      {{"-f", prompt_file},
       [](const Parsed& p) {
         EXPECT_TRUE(p.c.have_prompt);
         EXPECT_EQ(p.c.prompt, "from a file\n");
       }},
      {{"-sys", "Be brief."}, [](const Parsed& p) { EXPECT_EQ(p.c.system_prompt, "Be brief."); }},
      {{"-cnv"}, [](const Parsed& p) { EXPECT_TRUE(p.c.conversation); }},
      {{"-no-cnv"}, [](const Parsed& p) { EXPECT_FALSE(p.c.conversation); }},
      {{"--chat-template", "chatml", "--jinja"}, [](const Parsed& p) { EXPECT_EQ(p.c.chat_template, "chatml"); }},
  };
  for (const Row& r : rows) {
    std::string line;
    for (const auto& a : r.args) line += a + " ";
    SCOPED_TRACE(line);
    const Parsed p = parse_line(r.args);
    ASSERT_FALSE(p.exit.has_value()) << p.err;
    r.check(p);
  }
  std::filesystem::remove(prompt_file);
  std::filesystem::remove(grammar_file);
}

TEST(LlamaFlags, BadValuesAreUsageErrorsNamingTheFlag) {
  struct Row {
    std::vector<std::string> args;
    std::string names;
  };
  const Row rows[] = {
      {{"-n", "-2"}, "--n-predict"},
      {{"--temp", "abc"}, "--temp"},
      {{"--temp", "nan"}, "--temp"},
      {{"--top-p", "1.5"}, "--top-p"},
      {{"-s", "-5"}, "--seed"},
      {{"-t", "-1"}, "--threads"},
      {{"-ngl", "lots"}, "--n-gpu-layers"},
      {{"--device", "cpu", "-ngl", "4"}, "--device is cpu"},
      {{"-fa", "maybe"}, "maybe"},
      {{"-ctk", "q5_k"}, "--cache-type-k"},
      {{"-ot", "exps"}, "--override-tensor: 'exps': expected PATTERN=BUFFER"},
      {{"-ot", "exps=Metal"}, "'Metal' is not CPU or CUDA<n>"},
      {{"-ncmoe", "-3"}, "--n-cpu-moe"},
      {{"--expert-cache", "lots"}, "--expert-cache"},
      {{"--cpu-rows", "1.5"}, "--cpu-rows"},
      {{"--cpu-rows", "half"}, "'half' is not 'auto' or a share"},
      {{"-dev", "CUDA0,CUDA0"}, "lists cuda:0 twice"},
      {{"--device", "gpu0"}, "--device"},
      {{"-sm", "row"}, "tensor parallelism"},
      {{"-sm", "rows"}, "--split-mode"},
      {{"-ts", "1,-1"}, "--tensor-split"},
      {{"-ts", "0,0"}, "gives no GPU a share"},
      {{"-mg", "-1"}, "--main-gpu"},
      {{"-f", "/nonexistent/prompt.txt"}, "--file"},
      {{"-p", "a", "-f", "/dev/null"}, "excludes"},
      {{"-np", "2", "--slots", "4"}, "excludes"},
      {{"--slots", "0"}, "--slots"},
      {{"-np", "-2"}, "--parallel"},
      {{"--bogus"}, "--bogus"},
      {{"--temp"}, "--temp"},
  };
  for (const Row& r : rows) {
    std::string line;
    for (const auto& a : r.args) line += a + " ";
    const Parsed p = parse_line(r.args);
    ASSERT_TRUE(p.exit.has_value()) << line;
    EXPECT_NE(*p.exit, 0) << line;
    EXPECT_NE(p.err.find(r.names), std::string::npos) << line << ": " << p.err;
  }
}

TEST(LlamaFlags, GpuLayersOnACpuBuildAreANote) {
  const Parsed p = parse_line({"-ngl", "99"}, /*cuda_built=*/false);
  ASSERT_FALSE(p.exit.has_value());
  EXPECT_EQ(p.m.device, "cpu");
  EXPECT_NE(p.err.find("no CUDA"), std::string::npos) << p.err;
}

TEST(LlamaFlags, EveryLlamaShortSpellingIsInHelp) {
  SamplingFlags s;
  ModelFlags m;
  ChatFlags c;
  CLI::App app{"test"};
  add_sampling_flags(app, s);
  add_model_flags(app, m, true, true);
  add_chat_flags(app, c);
  ExpertPlacementFlags e;
  add_expert_flags(app, e);
  GpuSplitFlags g;
  add_gpu_split_flags(app, g);
  add_accepted_llama_flags(app, /*server=*/true);
  int ubatch = 0;
  add_ubatch_flag(app, ubatch);
  const std::string help = app.help();
  for (size_t i = 0; i < kLlamaShortFlagCount; ++i) {
    const std::string short_name = kLlamaShortFlags[i].llama;
    EXPECT_NE(help.find(kLlamaShortFlags[i].long_name), std::string::npos) << kLlamaShortFlags[i].long_name;
    EXPECT_NE(help.find("(" + short_name + ")"), std::string::npos) << short_name << " in\n" << help;
  }
}

TEST(LlamaFlags, SeedMinusOneIsRandom) {
  EXPECT_EQ(resolve_seed(7), 7u);
  // Two random seeds agree with probability 2^-64.
  EXPECT_NE(resolve_seed(-1), resolve_seed(std::nullopt));
}

TEST(LlamaFlags, ChatTemplateNamesJinjaOrTheModels) {
  EXPECT_EQ(resolve_chat_template("", std::string("model's")), "model's");
  EXPECT_FALSE(resolve_chat_template("", std::nullopt).has_value());
  EXPECT_EQ(resolve_chat_template("chatml", std::nullopt), builtin_chat_template("chatml"));
  EXPECT_EQ(resolve_chat_template("{{ messages[0].content }}", std::nullopt), "{{ messages[0].content }}");
  EXPECT_THROW(resolve_chat_template("vicuna", std::nullopt), CLI::ValidationError);
}

// Each built-in template (run by the Jinja engine) equals the hand-written renderer of its family
// (chosen by the template's marker strings, use_jinja = false): two independent implementations.
TEST(LlamaFlags, BuiltinTemplatesRenderAsTheirFamily) {
  const std::vector<std::vector<ChatMessage>> conversations = {
      {{"user", "Hello"}},
      {{"system", "Be brief."}, {"user", " Hi there "}},
      {{"system", "S"}, {"user", "one"}, {"assistant", " two "}, {"user", "three"}},
      {{"user", "a"}, {"assistant", "b"}, {"user", "c"}},
  };
  for (const std::string& name : builtin_chat_template_names()) {
    const std::string tmpl = *builtin_chat_template(name);
    EXPECT_EQ(chat_template_family_name(detect_chat_template(tmpl)), name);
    for (const auto& msgs : conversations) {
      for (const bool gen : {true, false}) {
        ChatTemplateOptions jinja, family;
        family.use_jinja = false;
        const std::string a = apply_chat_template(tmpl, msgs, gen, "<s>", "</s>", jinja);
        const std::string b = apply_chat_template(tmpl, msgs, gen, "<s>", "</s>", family);
        EXPECT_EQ(a, b) << name << " with " << msgs.size() << " messages, generation prompt " << gen;
      }
    }
  }
}

}  // namespace
}  // namespace pipellm::flags

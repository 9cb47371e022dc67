#include "flags/llama_flags.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "flags/builtin_chat_templates.h"

namespace pipellm::flags {

const ShortFlag kLlamaShortFlags[] = {
    {"-ngl", "--n-gpu-layers"},  {"-ctk", "--cache-type-k"}, {"-ctv", "--cache-type-v"},
    {"-cnv", "--conversation"},  {"-no-cnv", "--no-conversation"}, {"-sys", "--system-prompt"},
    {"-np", "--parallel"},       {"-fa", "--flash-attn"},    {"-jf", "--json-schema-file"},
    {"-cmoe", "--cpu-moe"},      {"-ncmoe", "--n-cpu-moe"},  {"-ot", "--override-tensor"},
    {"-dev", "--device"},        {"-sm", "--split-mode"},    {"-ts", "--tensor-split"},
    {"-mg", "--main-gpu"},        {"-ub", "--ubatch-size"},   {"-cb", "--cont-batching"},
    {"-nocb", "--no-cont-batching"},
};
const size_t kLlamaShortFlagCount = sizeof kLlamaShortFlags / sizeof kLlamaShortFlags[0];

namespace {

bool is_flash_attn_value(const std::string& v) { return v == "on" || v == "off" || v == "auto"; }

std::string read_text_file(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CLI::ValidationError(flag, "cannot read '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::vector<std::string> normalize_args(int argc, const char* const* argv) {
  std::vector<std::string> out;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i > 0) {
      for (size_t k = 0; k < kLlamaShortFlagCount; ++k) {
        const std::string s = kLlamaShortFlags[k].llama;
        if (a == s) {
          a = kLlamaShortFlags[k].long_name;
        } else if (a.rfind(s + "=", 0) == 0) {
          a = kLlamaShortFlags[k].long_name + a.substr(s.size());
        }
      }
      // llama.cpp's older `-fa` took no value; today it takes on|off|auto.
      if (a == "--flash-attn" && (i + 1 >= argc || !is_flash_attn_value(argv[i + 1]))) {
        out.push_back(a);
        out.push_back("on");
        continue;
      }
    }
    out.push_back(std::move(a));
  }
  return out;
}

std::optional<int> parse(CLI::App& app, int argc, const char* const* argv, int usage_status) {
  std::vector<std::string> args = normalize_args(argc, argv);
  args.erase(args.begin());  // the program name
  std::reverse(args.begin(), args.end());  // CLI11 takes a vector last-first
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    // Usage errors exit 2 (as before CLI11, and as most Unix tools); help and version 0.
    // CLI11 checks required flags before it reports words it did not understand, but a missing
    // flag is often a misspelt one: name the misspelling then.
    const bool missing = dynamic_cast<const CLI::RequiredError*>(&e) || dynamic_cast<const CLI::RequiresError*>(&e);
    if (missing && !app.remaining().empty()) {
      return app.exit(CLI::ExtrasError(app.get_name(), app.remaining())) == 0 ? 0 : usage_status;
    }
    return app.exit(e) == 0 ? 0 : usage_status;
  }
  return std::nullopt;
}

void add_sampling_flags(CLI::App& app, SamplingFlags& f) {
  const std::string g = "Sampling";
  auto finite = CLI::Validator(
      [](std::string& v) {
        try {
          size_t used = 0;
          const double x = std::stod(v, &used);
          if (used == v.size() && std::isfinite(x)) return std::string();
        } catch (...) {
        }
        return "'" + v + "' is not a finite number";
      },
      "NUMBER");
  app.add_option("-n,--n-predict,--max-tokens", f.n_predict, "tokens to generate; -1: until end of generation or the context")
      ->check(CLI::Range(-1, 1 << 24))
      ->group(g);
  app.add_option("--temp,--temperature", f.temperature, "temperature; 0: greedy (default 0.8)")
      ->check(finite & CLI::Range(0.0, 100.0))
      ->group(g);
  app.add_option("--top-k", f.top_k, "keep the K most likely tokens; 0: off (default 40)")->check(CLI::Range(0, 1 << 24))->group(g);
  app.add_option("--top-p", f.top_p, "nucleus sampling; 1: off (default 0.95)")->check(finite & CLI::Range(1e-6, 1.0))->group(g);
  app.add_option("--min-p", f.min_p, "drop tokens below P x the top one; 0: off (default 0.05)")
      ->check(finite & CLI::Range(0.0, 1.0))
      ->group(g);
  app.add_option("--repeat-penalty", f.repeat_penalty, "penalise repeated tokens; 1: off (default 1.0)")
      ->check(finite & CLI::Range(1e-3, 100.0))
      ->group(g);
  app.add_option("--repeat-last-n", f.repeat_last_n, "penalty window in tokens (default 64)")->check(CLI::Range(0, 1 << 24))->group(g);
  app.add_option("--presence-penalty", f.presence_penalty, "(default 0)")->check(finite & CLI::Range(-100.0, 100.0))->group(g);
  app.add_option("--frequency-penalty", f.frequency_penalty, "(default 0)")->check(finite & CLI::Range(-100.0, 100.0))->group(g);
  app.add_option_function<std::string>(
         "-s,--seed",
         [&f](const std::string& v) {
           // Whole text, no wrap-around: 2^64 is not 0, "12abc" is not 12.
           size_t used = 0;
           long long x = 0;
           try {
             x = std::stoll(v, &used);
           } catch (const std::exception&) {
             used = 0;
           }
           if (used == 0 || used != v.size() || x < -1) {
             throw CLI::ValidationError("--seed", "'" + v + "' is not a seed (-1 for random, or 0.." +
                                                      std::to_string(INT64_MAX) + ")");
           }
           f.seed = x;
         },
         "random seed; -1: random (default)")
      ->group(g);
  app.add_option("--samplers,--sampler-chain", f.samplers,
                 "order of top_k, top_p, min_p, temperature (';' or ',' separated; default in that order)")
      ->group(g);
  app.add_flag("--ignore-eos", f.ignore_eos, "do not stop at end-of-generation tokens")->group(g);
  auto* grammar = app.add_option("--grammar", f.grammar, "GBNF grammar the output must match")->group(g);
  app.add_option_function<std::string>(
         "--grammar-file", [&f](const std::string& path) { f.grammar = read_text_file("--grammar-file", path); },
         "file holding a GBNF grammar")
      ->excludes(grammar)
      ->group(g);
  auto* schema = app.add_option("-j,--json-schema", f.json_schema, "JSON schema the output must match")->group(g);
  app.add_option_function<std::string>(
         "--json-schema-file",
         [&f](const std::string& path) { f.json_schema = read_text_file("--json-schema-file", path); },
         "file holding a JSON schema (-jf)")
      ->excludes(schema)
      ->group(g);
}

void add_model_flags(CLI::App& app, ModelFlags& f, bool cuda_built, bool parallel) {
  const std::string g = "Model";
  app.add_option("-m,--model", f.model, "GGUF model file (split files: the first part)")->group(g);
  app.add_option_function<int>(
         "-c,--ctx-size,--ctx",
         [&f](int v) {
           f.ctx_size = v;
           f.ctx_from_model = v == 0;
         },
         "context length in tokens; 0: the model's training context")
      ->check(CLI::Range(0, 1 << 24))
      ->group(g);
  app.add_option("-t,--threads", f.threads, "CPU threads; 0: one per hardware thread")->check(CLI::Range(0, 4096))->group(g);
  if (parallel) {
    // Two spellings, two meanings of -c: llama-server divides its context among -np slots.
    auto* np = app.add_option_function<int>(
                      "--parallel",
                      [&f](int n) {
                        f.parallel = std::max(n, 0);
                        f.ctx_shared = n > 0;
                      },
                      "sequences served at once (-np), sharing the context as llama-server's do: each gets -c / N; "
                      "-1 or 0: the program's choice, each with the whole -c")
                   ->check(CLI::Range(-1, 65536))
                   ->group(g);
    app.add_option_function<int>(
           "--slots",
           [&f](int n) {
             f.parallel = n;
             f.ctx_shared = false;
           },
           "sequences served at once, each with the whole -c")
        ->check(CLI::Range(1, 65536))
        ->excludes(np)
        ->group(g);
  }
  auto* device = app.add_option("--device", f.device, "cpu, cuda or cuda:N")->group(g);
  app.add_option_function<std::string>(
         "--n-gpu-layers,--gpu-layers",
         [&f, cuda_built, device](const std::string& v) {
           int n = 0;
           if (v == "all" || v == "auto") {
             n = 1 << 20;
           } else {
             try {
               size_t used = 0;
               n = std::stoi(v, &used);
               if (used != v.size() || n < -1) throw std::invalid_argument(v);
             } catch (const std::exception&) {
               throw CLI::ValidationError("--n-gpu-layers", "'" + v + "' is not a layer count, 'auto' or 'all'");
             }
           }
           // With --device (cuda:N picks the GPU) -ngl only says how many layers stay resident.
           if (n != 0 && device->count() > 0 && f.device == "cpu") {
             throw CLI::ValidationError("--n-gpu-layers", "-ngl " + v + " asks for a GPU but --device is cpu");
           }
           if (n == 0) {
             f.device = "cpu";
           } else if (cuda_built) {
             // N layers resident; the others stream from host memory each pass (--cpu-rows
             // leaves part of their rows to the CPU in decode; whole layers never run there).
             if (f.device == "cpu") f.device = "cuda";
             if (n > 0 && n < (1 << 20)) f.n_gpu_layers = n;
           } else if (n > 0) {
             std::fprintf(stderr, "note: -ngl %s ignored: this build has no CUDA backend\n", v.c_str());
           }
         },
         "layers on the GPU (-ngl): 0 runs on the CPU; N keeps N layers resident on the GPU and streams the "
         "others from host memory; 'all' (or -1) every layer")
      ->group(g);
  app.add_option("--flash-attn", f.flash_attn, "on, off or auto (-fa): accepted; attention is always fused")
      ->check(CLI::IsMember({"on", "off", "auto"}))
      ->group(g);
  auto kv = [](const std::string& flag, std::optional<TensorType>& out) {
    return [flag, &out](const std::string& v) {
      const auto t = tensor_type_from_name(v);
      if (!t || !(*t == TensorType::F16 || *t == TensorType::F32 || *t == TensorType::Q8_0 || *t == TensorType::Q4_0)) {
        throw CLI::ValidationError(flag, "'" + v + "' is not f16, f32, q8_0 or q4_0");
      }
      out = *t;
    };
  };
  app.add_option_function<std::string>("--cache-type-k", kv("--cache-type-k", f.cache_type_k),
                                       "K cache type: f16 (default), f32, q8_0, q4_0 (-ctk)")
      ->group(g);
  app.add_option_function<std::string>("--cache-type-v", kv("--cache-type-v", f.cache_type_v),
                                       "V cache type: f16 (default), f32, q8_0, q4_0 (-ctv)")
      ->group(g);
}

void add_ubatch_flag(CLI::App& app, int& ubatch) {
  app.add_option("--ubatch-size", ubatch, "tokens per step: prompts are fed in chunks of this many (-ub)")
      ->check(CLI::Range(1, 1 << 20))
      ->group("Model");
}

void add_accepted_llama_flags(CLI::App& app, bool server) {
  const std::string g = "Accepted from llama.cpp";
  app.add_option("-b,--batch-size", "llama.cpp's logical batch: accepted; a step holds at most --ubatch-size tokens")
      ->type_name("N")
      ->check(CLI::Range(1, 1 << 24))
      ->group(g);
  app.add_flag("--mlock", "accepted: the weights are mapped and read from the page cache")->group(g);
  app.add_flag("--no-mmap", "accepted: the weights are always mapped")->group(g);
  app.add_flag("--cont-batching", "accepted (-cb): sequences always join and leave steps as they come")->group(g);
  app.add_flag("--no-cont-batching", "accepted (-nocb): batching is always continuous")->group(g);
  if (!server) return;
  app.add_option("--cache-reuse", "accepted: a request reuses the cache of the slot sharing its prompt's longest prefix")
      ->type_name("N")
      ->check(CLI::Range(0, 1 << 24))
      ->group(g);
  app.add_flag("--metrics", "accepted: /metrics is always served")->group(g);
  app.add_flag("--no-webui", "accepted: there is no web UI")->group(g);
}

void add_chat_flags(CLI::App& app, ChatFlags& f) {
  const std::string g = "Prompt and chat";
  auto* prompt = app.add_option_function<std::string>(
                        "-p,--prompt",
                        [&f](const std::string& v) {
                          f.prompt = v;
                          f.have_prompt = true;
                        },
                        "prompt text")
                     ->group(g);
  app.add_option_function<std::string>(
         "-f,--file",
         [&f](const std::string& path) {
           f.prompt = read_text_file("--file", path);
           f.have_prompt = true;
         },
         "read the prompt from a file")
      ->excludes(prompt)
      ->group(g);
  app.add_option("--system-prompt,--system", f.system_prompt, "system message of the chat (-sys)")->group(g);
  auto* cnv = app.add_flag("--conversation", f.conversation, "interactive chat with the model's template (-cnv)")->group(g);
  app.add_flag_callback("--no-conversation", [&f] { f.conversation = false; }, "no interactive chat (-no-cnv)")
      ->excludes(cnv)
      ->group(g);
  add_chat_template_flags(app, f.chat_template);
}

void add_chat_template_flags(CLI::App& app, std::string& chat_template) {
  const std::string g = "Prompt and chat";
  std::string names;
  for (const std::string& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
  auto* tmpl = app.add_option("--chat-template", chat_template,
                              "a built-in template (" + names + ") or Jinja text, instead of the model's")
                   ->group(g);
  app.add_option_function<std::string>(
         "--chat-template-file",
         [&chat_template](const std::string& path) { chat_template = read_text_file("--chat-template-file", path); },
         "a Jinja chat template file, instead of the model's")
      ->excludes(tmpl)
      ->group(g);
  app.add_flag("--jinja", "accepted: chat templates always run through the Jinja engine")->group(g);
}

uint64_t resolve_seed(const std::optional<int64_t>& seed) {
  if (seed && *seed >= 0) return static_cast<uint64_t>(*seed);
  return (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
}

std::vector<std::string> chat_template_names() { return builtin_chat_template_names(); }

std::optional<std::string> resolve_chat_template(const std::string& flag, const std::optional<std::string>& model_template) {
  if (flag.empty()) return model_template;
  if (auto t = builtin_chat_template(flag)) return t;
  // Not a name: Jinja text. A bare word is a misspelt name, not a template that prints itself.
  if (flag.find("{{") == std::string::npos && flag.find("{%") == std::string::npos) {
    std::string names;
    for (const std::string& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
    throw CLI::ValidationError("--chat-template", "'" + flag + "' is neither a built-in template (" + names +
                                                      ") nor Jinja text");
  }
  return flag;
}

}  // namespace pipellm::flags

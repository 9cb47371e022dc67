// llama.cpp's command-line flags, one definition for pipellm, pipellm-coordinator and
// pipellm-client: each flag's spellings (llama.cpp's first, our older ones as aliases), its
// meaning, range and default live here, so the three programs cannot drift apart.
//
// llama.cpp spells some flags with one dash and several letters (-ngl, -ctk, -cnv, -np, -fa);
// CLI11 reads one dash as one letter, so parse() rewrites those to their long names first
// (kLlamaShortFlags). Everything else is CLI11: `--flag=value` and `--flag value` both work,
// every flag appears in --help, and a bad value is a usage error naming the flag (exit 2).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/tensor_type.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace pipellm::flags {

// llama.cpp's one-dash multi-letter spellings and the long names they stand for.
struct ShortFlag {
  const char* llama;  // "-ngl"
  const char* long_name;  // "--n-gpu-layers"
};
extern const ShortFlag kLlamaShortFlags[];
extern const size_t kLlamaShortFlagCount;

// argv with llama.cpp's one-dash spellings rewritten ("-ngl 99", "-ngl=99" -> "--n-gpu-layers
// 99"); a bare "-fa" / "--flash-attn" (llama.cpp before 2025) becomes "--flash-attn on".
std::vector<std::string> normalize_args(int argc, const char* const* argv);

// Parses with `app` after normalize_args. Returns nullopt to go on, or the exit status when the
// program should stop now (--help, --version: 0, printed on stdout; a usage error: CLI11's
// message on stderr and `usage_status`; a required flag missing beside a word not understood is
// reported as that word, the likely misspelling).
std::optional<int> parse(CLI::App& app, int argc, const char* const* argv, int usage_status = 2);

// The sampling settings a user can give; unset fields keep the receiver's defaults (the
// engine's SamplerParams for the CLI, the server's request defaults for the coordinator, the
// server's for the client: one set, engine/runtime/sampler.h).
struct SamplingFlags {
  std::optional<int> n_predict;            // -n; -1: until end of generation or the context
  std::optional<float> temperature;        // <= 0: greedy
  std::optional<int> top_k;
  std::optional<float> top_p, min_p;
  std::optional<float> repeat_penalty, presence_penalty, frequency_penalty;
  std::optional<int> repeat_last_n;
  std::optional<int64_t> seed;             // -1: random
  std::string samplers;                    // --samplers: the filter order, ';' or ',' separated
  bool ignore_eos = false;
  std::string grammar;                     // GBNF text (--grammar, or --grammar-file's contents)
  std::string json_schema;                 // JSON text (-j, or --json-schema-file's contents)
};

// -n/--n-predict/--max-tokens, --temp/--temperature, --top-k, --top-p, --min-p,
// --repeat-penalty, --repeat-last-n, --presence-penalty, --frequency-penalty, -s/--seed,
// --samplers/--sampler-chain, --ignore-eos, --grammar, --grammar-file, -j/--json-schema,
// -jf/--json-schema-file. Ranges checked at parse time.
void add_sampling_flags(CLI::App& app, SamplingFlags& f);

// The model and where it runs.
struct ModelFlags {
  std::string model;                       // -m; "": the program's default
  int ctx_size = 0;                        // -c; 0: the program's default
  bool ctx_from_model = false;             // -c 0 given: the model's training context (llama.cpp's meaning)
  int threads = 0;                         // -t; 0: one per hardware thread
  int parallel = 0;                        // -np / --slots; 0: the program's default
  // -np/--parallel as llama-server means it: the sequences share -c (each gets -c / N).
  // --slots N: each of the N sequences has the whole -c.
  bool ctx_shared = false;
  std::string device = "cpu";              // --device, or -ngl N > 0 on a CUDA build: cuda
  std::optional<int> n_gpu_layers;         // -ngl N: N layers resident on the GPU (unset, 'all': every one)
  std::optional<TensorType> cache_type_k, cache_type_v;  // -ctk / -ctv
  std::string flash_attn = "auto";         // -fa on|off|auto: attention is always fused here
};

// -m/--model, -c/--ctx-size/--ctx, -t/--threads, -np/--parallel, --slots, --device,
// -ngl/--n-gpu-layers/--gpu-layers, -fa/--flash-attn, -ctk/--cache-type-k, -ctv/--cache-type-v.
// `cuda_built`: whether -ngl N > 0 can select the GPU (else it is accepted with a note, as
// llama.cpp does on a CPU build). `parallel`: whether the program runs several sequences.
void add_model_flags(CLI::App& app, ModelFlags& f, bool cuda_built, bool parallel);

// -ub/--ubatch-size N: tokens per step (prompt chunks), for the programs that run steps of a
// runtime (pipellm generate, pipellm-coordinator); `ubatch` keeps 0 when not given.
void add_ubatch_flag(CLI::App& app, int& ubatch);

// llama.cpp flags that name something this engine does anyway or differently; accepted so that
// llama.cpp command lines run, each with its --help line saying what happens instead:
// -b/--batch-size N, --mlock, --no-mmap, -cb/--cont-batching, -nocb/--no-cont-batching.
// `server`: also llama-server's --cache-reuse N, --metrics, --no-webui.
void add_accepted_llama_flags(CLI::App& app, bool server);

// Prompt and chat.
struct ChatFlags {
  std::string prompt;                      // -p, or -f FILE's contents
  bool have_prompt = false;
  std::string system_prompt;               // -sys
  bool conversation = false;               // -cnv: interactive chat
  std::string chat_template;               // --chat-template NAME|Jinja text, --chat-template-file
};

// -p/--prompt, -f/--file, -sys/--system-prompt, -cnv/--conversation, -no-cnv, and the template flags.
void add_chat_flags(CLI::App& app, ChatFlags& f);
// --chat-template NAME|JINJA, --chat-template-file, --jinja (accepted: templates always run
// through the Jinja engine). The server takes only these.
void add_chat_template_flags(CLI::App& app, std::string& chat_template);

// "-1" / unset seed -> a random one; else the value.
uint64_t resolve_seed(const std::optional<int64_t>& seed);

// The chat template to use: `flag` as a built-in name (chatml, llama3, ...: chat_template_names()),
// else `flag` itself as Jinja text; "" -> `model_template` (nullopt when the model has none).
std::optional<std::string> resolve_chat_template(const std::string& flag, const std::optional<std::string>& model_template);
std::vector<std::string> chat_template_names();

}  // namespace pipellm::flags

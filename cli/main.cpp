// `pipellm` command-line entry: dispatches to the sub-commands in cmd_*.cpp, each of which parses
// its own flags with CLI11 (flags::parse: `pipellm CMD --help`, usage errors exit 2).
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "base/version.h"
#include "cli/commands.h"
#include "engine/model/model_config.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};

constexpr Command kCommands[] = {
    {"inspect", pipellm::cli::cmd_inspect, "show a GGUF file's metadata, tensors and sizes"},
    {"tokenize", pipellm::cli::cmd_tokenize, "text -> token ids with a GGUF file's tokenizer"},
    {"mkmodel", pipellm::cli::cmd_mkmodel, "write a random-weight model of a real shape"},
    {"quantize", pipellm::cli::cmd_quantize, "re-encode a model to another file type (llama-quantize's mixes)"},
    {"import-raw", pipellm::cli::cmd_import_raw, "write a GGUF from raw trained weights + HF tokenizer.json"},
    {"generate", pipellm::cli::cmd_generate, "generate text from a prompt (streams to stdout)"},
    {"eval", pipellm::cli::cmd_eval, "write the logits of every position of a token-id file"},
    {"bench", pipellm::cli::cmd_bench, "prompt/generation speed against the hardware limit (CPU, or --device cuda)"},
    {"plan", pipellm::cli::cmd_plan, "the layer partition of a stage config (pipellm-stage --config)"},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: pipellm <command> [options]\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.help);
  std::fprintf(out, "\n'pipellm <command> --help' shows a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    usage(stdout);
    return 0;
  }
  if (name == "--version" || name == "-V") {
    std::string archs;
    for (const std::string& a : pipellm::supported_architectures()) archs += (archs.empty() ? "" : ", ") + a;
    std::printf("pipellm %s\narchitectures: %s\nCUDA backend: %s\n", pipellm::pipellm_version(), archs.c_str(),
                PIPELLM_WITH_CUDA ? "built" : "not built");
    return 0;
  }
  for (const auto& c : kCommands) {
    if (name == c.name) {
      try {
        return c.run(argc - 1, argv + 1);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "pipellm %s: error: %s\n", c.name, e.what());
        return 1;
      }
    }
  }
  std::fprintf(stderr, "pipellm: unknown command '%s'\n\n", name.c_str());
  usage(stderr);
  return 2;
}

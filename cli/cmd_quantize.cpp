// `pipellm quantize IN.gguf OUT.gguf TYPE`: re-encodes a model with llama-quantize's type mix.
#include <chrono>
#include <cstdio>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/requantize.h"
#include "engine/util/thread_pool.h"

namespace pipellm::cli {
namespace {

void usage(FILE* out) {
  std::fprintf(out, "usage: pipellm quantize IN.gguf OUT.gguf TYPE [--threads N]\n  types:");
  for (const auto& n : file_type_names()) std::fprintf(out, " %s", n.c_str());
  std::fprintf(out, "\n");
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
  std::vector<std::string> pos;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
      if (threads <= 0) {
        std::fprintf(stderr, "pipellm quantize: --threads: '%s' is not a positive integer\n", argv[i]);
        return 2;
      }
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "pipellm quantize: unknown option '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 3) {
    usage(stderr);
    return 2;
  }
  const auto ft = file_type_from_name(pos[2]);
  if (!ft) {
    std::fprintf(stderr, "pipellm quantize: unknown type '%s'\n", pos[2].c_str());
    usage(stderr);
    return 2;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto in = GgufFile::open(pos[0]);
  ThreadPool pool(threads);
  requantize_model(*in, *ft, pos[1], pool);
  std::fprintf(stderr, "wrote %s (%s) in %.1f s\n", pos[1].c_str(), ft->name.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

}  // namespace pipellm::cli

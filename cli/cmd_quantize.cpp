// `pipellm quantize [options] IN.gguf [OUT.gguf] TYPE [NTHREADS]`: re-encodes a model with
// llama-quantize's type mix (llama-quantize's argument order and --allow-requantize).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/engine_options.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/requantize.h"
#include "engine/util/thread_pool.h"

namespace pipellm::cli {
namespace {

std::string accepted_types() {
  std::string s;
  for (const auto& n : file_type_names()) s += (s.empty() ? "" : " ") + n;
  return s + " (Q4_K and Q5_K mean Q4_K_M and Q5_K_M)";
}

// Whether a positional argument names a file type, writable or not (llama-quantize's test for
// "is the output path left out").
bool names_a_type(const std::string& s) { return file_type_from_name(s) || unwritable_file_type(s); }

// NTHREADS: a positive count, as -t takes (0 or junk is a usage error, not "all cores").
int parse_threads(const std::string& s) {
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v <= 0 || v > 4096) return -1;
  return static_cast<int>(v);
}

double mib(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

}  // namespace

int cmd_quantize(int argc, char** argv) {
  std::vector<std::string> pos;
  int threads = 0;
  RequantizeOptions ropt;
  CLI::App app{"pipellm quantize: re-encodes a model with llama-quantize's type mix for TYPE, in llama-quantize's "
               "argument order. OUT defaults to ggml-model-TYPE.gguf beside IN; NTHREADS (or -t) defaults to all "
               "cores.",
               "pipellm quantize"};
  set_usage(app, "pipellm quantize [OPTIONS] IN.gguf [OUT.gguf] TYPE [NTHREADS]");
  app.add_flag("--allow-requantize", ropt.allow_requantize,
               "re-encode tensors that are already quantized (rounds them twice)");
  app.add_option("-t,--threads", threads, "worker threads (default: all cores)")
      ->type_name("N")
      ->check(CLI::Range(1, 4096));
  // One positional list, read below: whether OUT is there depends on whether the second word
  // names a type, which CLI11's fixed positional slots cannot express.
  app.add_option("ARGS", pos, "IN.gguf [OUT.gguf] TYPE [NTHREADS]")->type_name("");
  app.footer("types: " + accepted_types());
  if (auto code = flags::parse(app, argc, argv)) return *code;
  // IN [OUT] TYPE [NTHREADS]: OUT is left out when the second argument is a type name.
  std::string in_path, out_path, type_name, threads_arg;
  if (pos.size() >= 2 && pos.size() <= 3 && names_a_type(pos[1])) {
    in_path = pos[0];
    type_name = pos[1];
    if (pos.size() == 3) threads_arg = pos[2];
  } else if (pos.size() == 3 || pos.size() == 4) {
    in_path = pos[0];
    out_path = pos[1];
    type_name = pos[2];
    if (pos.size() == 4) threads_arg = pos[3];
  } else {
    std::fputs("pipellm quantize: error: expected IN.gguf [OUT.gguf] TYPE [NTHREADS]\nRun with --help for more "
               "information.\n",
               stderr);
    return 2;
  }
  if (!threads_arg.empty()) {
    threads = parse_threads(threads_arg);
    if (threads <= 0) {
      std::fprintf(stderr, "pipellm quantize: NTHREADS: '%s' is not a positive integer\n", threads_arg.c_str());
      return 2;
    }
  }
  const auto ft = file_type_from_name(type_name);
  if (!ft) {
    if (const auto t = unwritable_file_type(type_name)) {
      std::fprintf(stderr,
                   "pipellm quantize: type '%s' needs a %s encoder, which PipeLLM does not have (it %s); "
                   "accepted types: %s\n",
                   type_name.c_str(), tensor_type_name(*t),
                   tensor_type_info(*t).can_dequantize ? "runs such files, made elsewhere" : "cannot run them either",
                   accepted_types().c_str());
    } else {
      std::fprintf(stderr, "pipellm quantize: unknown type '%s'; accepted types: %s\n", type_name.c_str(),
                   accepted_types().c_str());
    }
    return 2;
  }
  if (out_path.empty()) {
    // llama-quantize's default name, beside the input.
    out_path = (std::filesystem::path(in_path).parent_path() / ("ggml-model-" + ft->name + ".gguf")).string();
  }
  std::error_code ec;
  if (std::filesystem::equivalent(in_path, out_path, ec)) {
    std::fprintf(stderr, "pipellm quantize: OUT '%s' is the input file\n", out_path.c_str());
    return 2;
  }

  const auto t0 = std::chrono::steady_clock::now();
  auto in = GgufFile::open(in_path);
  ThreadPool pool(threads);
  // One line per tensor; the percentage counts source bytes (what the work scales with).
  ropt.on_tensor = [](const RequantizeProgress& p) {
    const int width = static_cast<int>(std::to_string(p.count).size());
    std::fprintf(stderr, "[%*d/%d] %5.1f%% %-40s %-5s -> %s%s\n", width, p.index, p.count,
                 p.in_bytes_total ? 100.0 * static_cast<double>(p.in_bytes_done) / static_cast<double>(p.in_bytes_total)
                                  : 100.0,
                 p.name->c_str(), tensor_type_name(p.from), tensor_type_name(p.to), p.converted ? "" : " (copied)");
  };
  const RequantizeSummary s = requantize_model(*in, *ft, out_path, pool, ropt);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const uint64_t in_file = std::filesystem::file_size(in_path);
  const uint64_t out_file = std::filesystem::file_size(out_path);
  std::fprintf(stderr,
               "quantize: wrote %s (%s): %d tensors, %d re-encoded | file %.2f MiB -> %.2f MiB (%.1f%%) | "
               "tensor data %.2f MiB -> %.2f MiB | %.2f s, %d threads\n",
               out_path.c_str(), ft->name.c_str(), s.n_tensors, s.n_converted, mib(in_file), mib(out_file),
               in_file ? 100.0 * static_cast<double>(out_file) / static_cast<double>(in_file) : 0.0, mib(s.in_bytes),
               mib(s.out_bytes), secs, pool.size());
  return 0;
}

}  // namespace pipellm::cli

// `pipellm mkmodel`: writes a random-weight GGUF model of a real shape.
#include <chrono>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/random_model.h"
#include "engine/util/error.h"
#include "engine/util/thread_pool.h"

namespace pipellm::cli {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: pipellm mkmodel [--preset NAME | --arch A --layers N --embd N --ff N --heads N\n"
               "                        --kv-heads N --vocab-size N] [--quant TYPE] [--vocab FROM.gguf]\n"
               "                        [--ctx N] [--seed S] [--threads N] OUT.gguf\n"
               "  presets:");
  for (const auto& n : model_preset_names()) std::fprintf(out, " %s", n.c_str());
  std::fprintf(out, "\n  quant types:");
  for (const auto& n : file_type_names()) std::fprintf(out, " %s", n.c_str());
  std::fprintf(out, " (default Q4_K_M)\n  --vocab copies the tokenizer (and so the vocabulary size) from another GGUF\n");
}

}  // namespace

int cmd_mkmodel(int argc, char** argv) {
  ModelShape shape;
  bool have_shape = false;
  std::string quant = "Q4_K_M", vocab_path, out;
  uint64_t seed = 1;
  int threads = 0;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto val = [&]() -> std::string {
        if (i + 1 >= argc) throw InvalidArgument(a + " needs a value");
        return argv[++i];
      };
      constexpr int kMax = 1 << 20;
      if (a == "-h" || a == "--help") {
        usage(stdout);
        return 0;
      } else if (a == "--preset") {
        const std::string name = val();
        auto p = model_preset(name);
        if (!p) throw InvalidArgument("--preset: unknown preset '" + name + "'");
        shape = *p;
        have_shape = true;
      } else if (a == "--arch") {
        shape.arch = val();
        if (shape.arch != "llama" && shape.arch != "qwen2" && shape.arch != "qwen3")
          throw InvalidArgument("--arch: '" + shape.arch + "' is not one of llama, qwen2, qwen3");
      } else if (a == "--layers") {
        shape.n_layer = parse_int(a, val(), 1, 1024);
        have_shape = true;
      } else if (a == "--embd") {
        shape.n_embd = parse_int(a, val(), 32, kMax);
      } else if (a == "--ff") {
        shape.n_ff = parse_int(a, val(), 32, kMax);
      } else if (a == "--heads") {
        shape.n_head = parse_int(a, val(), 1, 1024);
      } else if (a == "--kv-heads") {
        shape.n_head_kv = parse_int(a, val(), 1, 1024);
      } else if (a == "--vocab-size") {
        shape.n_vocab = parse_int(a, val(), 259, 1 << 24);
      } else if (a == "--ctx") {
        shape.n_ctx = parse_int(a, val(), 1, 1 << 24);
      } else if (a == "--tied") {
        shape.tied_output = true;
      } else if (a == "--quant") {
        quant = val();
      } else if (a == "--vocab") {
        vocab_path = val();
      } else if (a == "--seed") {
        seed = static_cast<uint64_t>(parse_int(a, val(), 0, 1 << 30));
      } else if (a == "--threads") {
        threads = parse_int(a, val(), 1, 4096);
      } else if (!a.empty() && a[0] == '-') {
        throw InvalidArgument("unknown option '" + a + "'");
      } else if (out.empty()) {
        out = a;
      } else {
        throw InvalidArgument("unexpected argument '" + a + "'");
      }
    }
    if (out.empty()) throw InvalidArgument("missing OUT.gguf");
    if (!have_shape) throw InvalidArgument("give --preset NAME or --layers/--embd/... for the shape");
    if (shape.n_embd == 0 || shape.n_ff == 0 || shape.n_head == 0) throw InvalidArgument("--embd, --ff and --heads are needed");
    if (shape.n_head_kv == 0) shape.n_head_kv = shape.n_head;
    if (shape.n_vocab == 0 && vocab_path.empty()) shape.n_vocab = 32000;
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm mkmodel: %s\n", e.what());
    usage(stderr);
    return 2;
  }
  const auto ft = file_type_from_name(quant);
  if (!ft) {
    std::fprintf(stderr, "pipellm mkmodel: --quant: unknown type '%s'\n", quant.c_str());
    usage(stderr);
    return 2;
  }

  std::unique_ptr<GgufFile> vocab;
  if (!vocab_path.empty()) vocab = GgufFile::open(vocab_path);
  RandomModelOptions opt;
  opt.shape = shape;
  opt.file_type = *ft;
  opt.vocab = vocab.get();
  opt.seed = seed;
  const auto t0 = std::chrono::steady_clock::now();
  opt.progress = [&](size_t done, size_t total, uint64_t bytes, uint64_t total_bytes) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\rmkmodel: %zu/%zu tensors, %.2f/%.2f GiB, %.1f s", done, total,
                 static_cast<double>(bytes) / (1ull << 30), static_cast<double>(total_bytes) / (1ull << 30), s);
    if (done == total) std::fprintf(stderr, "\n");
  };
  ThreadPool pool(threads);
  write_random_model(opt, out, pool);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "wrote %s (%s %s, %d threads) in %.1f s\n", out.c_str(), shape.arch.c_str(), ft->name.c_str(),
               pool.size(), s);
  return 0;
}

}  // namespace pipellm::cli

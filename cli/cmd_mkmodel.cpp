// `pipellm mkmodel`: writes a random-weight GGUF model of a real shape.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/engine_options.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model_gen/random_model.h"
#include "engine/util/thread_pool.h"

namespace pipellm::cli {
namespace {

// What --help shows after the options: the choices of --arch, --preset and --quant.
std::string footer() {
  std::string s = "architectures (--arch):";
  for (const auto& a : model_shape_archs()) s += " " + a;
  s += "\npresets (--preset):\n";
  for (const auto& n : model_preset_names()) {
    char line[256];
    std::snprintf(line, sizeof line, "  %-16s %s\n", n.c_str(), shape_summary(*model_preset(n)).c_str());
    s += line;
  }
  s += "quant types (--quant):";
  for (const auto& n : file_type_names()) s += " " + n;
  return s + " (default: the preset's, else Q4_K_M)";
}

}  // namespace

int cmd_mkmodel(int argc, char** argv) {
  std::string preset, quant, vocab_path, out;
  bool tiny = false;
  // Shape options apply after the preset (and --tiny), whatever their place on the line: each
  // lands in its own slot here (a deque: CLI11 keeps pointers to the slots) and is applied once
  // the line is read.
  std::deque<std::pair<std::optional<int>, int ModelShape::*>> ints;
  std::optional<std::string> arch;
  bool tied = false;
  uint64_t seed = 1;
  int threads = 0;
  CLI::App app{"pipellm mkmodel: writes a random-weight GGUF model of a real shape: a preset (a published model's "
               "shape, which the shape options change) or, without one, the shape options alone (--layers, --embd, "
               "--ff and --heads at least).",
               "pipellm mkmodel"};
  app.get_formatter()->column_width(28);
  const std::string g = "Shape";
  auto* preset_opt = app.add_option("--preset", preset, "a published model's shape (see below)")
                         ->check(CLI::Validator(
                             [](std::string& v) {
                               return model_preset(v) ? std::string() : "unknown preset '" + v + "' (see --help)";
                             },
                             ""))
                         ->type_name("NAME")
                         ->group(g);
  app.add_flag("--tiny", tiny,
               "the preset's family at test size (n_embd 256, 2 layers (gemma3, gemma4: 6; qwen3.6: 4, one attention "
               "interval), at most 16 experts, vocabulary 1024): every tensor kind of the real model, in KiB")
      ->needs(preset_opt)
      ->group(g);
  app.add_option("--arch", arch, "architecture (see below)")
      ->check(CLI::Validator(
          [](std::string& v) {
            const auto& archs = model_shape_archs();
            return std::find(archs.begin(), archs.end(), v) != archs.end()
                       ? std::string()
                       : "'" + v + "' cannot be generated (see --help)";
          },
          ""))
      ->type_name("ARCH")
      ->group(g);
  constexpr int kMax = 1 << 20;
  auto shape_int = [&](const std::string& flag, int lo, int hi, int ModelShape::*field, const std::string& what) {
    ints.emplace_back(std::nullopt, field);
    app.add_option(flag, ints.back().first, what)->type_name("N")->check(CLI::Range(lo, hi))->group(g);
  };
  shape_int("--layers", 1, 1024, &ModelShape::n_layer, "layers");
  shape_int("--embd", 32, kMax, &ModelShape::n_embd, "embedding width");
  shape_int("--ff", 32, kMax, &ModelShape::n_ff, "feed-forward width");
  shape_int("--heads", 1, 1024, &ModelShape::n_head, "attention heads");
  shape_int("--kv-heads", 1, 1024, &ModelShape::n_head_kv, "KV heads (default: --heads)");
  shape_int("--head-dim", 2, 4096, &ModelShape::head_dim, "head dimension");
  shape_int("--experts", 1, 4096, &ModelShape::n_expert, "experts");
  shape_int("--experts-used", 1, 4096, &ModelShape::n_expert_used, "experts used per token");
  shape_int("--expert-ff", 32, kMax, &ModelShape::n_ff_expert, "feed-forward width of an expert");
  shape_int("--window", 1, 1 << 24, &ModelShape::sliding_window, "sliding-window length");
  shape_int("--vocab-size", 259, 1 << 24, &ModelShape::n_vocab, "vocabulary size (default 32000)");
  shape_int("--ctx", 1, 1 << 24, &ModelShape::n_ctx, "the model's training context length");
  app.add_flag("--tied", tied, "the output head shares the token embedding")->group(g);
  bool text_head = false;
  app.add_flag("--text-head", text_head,
               "output rows only for tokens of printable ASCII text (needs --vocab): the random model's text "
               "passes servers that check UTF-8, such as llama-server");
  app.add_option("--quant", quant, "file type (see below)")
      ->check(CLI::Validator(
          [](std::string& v) { return file_type_from_name(v) ? std::string() : "unknown type '" + v + "'"; }, ""))
      ->type_name("TYPE");
  app.add_option("--vocab", vocab_path, "copy the tokenizer (and so the vocabulary size) from this GGUF")
      ->type_name("FILE");
  app.add_option("-s,--seed", seed, "random seed of the weights (default 1)")
      ->type_name("N")
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("-t,--threads", threads, "worker threads (default: all cores)")
      ->type_name("N")
      ->check(CLI::Range(1, 4096));
  app.add_option("OUT", out, "the GGUF file to write")->type_name("")->required();
  app.footer(footer());
  if (auto code = flags::parse(app, argc, argv)) return *code;
  ModelShape shape;
  try {
    if (!preset.empty()) shape = *model_preset(preset);
    if (tiny) shape = shrink_shape(shape);
    if (arch) shape.arch = *arch;
    for (const auto& [value, field] : ints) {
      if (value) shape.*field = *value;
    }
    if (tied) shape.tied_output = true;
    if (preset.empty()) {
      if (shape.n_layer == 0) throw InvalidArgument("give --preset NAME or --layers/--embd/... for the shape");
      if (shape.n_embd == 0 || shape.n_ff == 0 || shape.n_head == 0)
        throw InvalidArgument("--embd, --ff and --heads are needed");
      if (shape.n_head_kv == 0) shape.n_head_kv = shape.n_head;
      if (shape.n_vocab == 0 && vocab_path.empty()) shape.n_vocab = 32000;
    }
    if (quant.empty()) quant = shape.file_type;
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm mkmodel: error: %s\nRun with --help for more information.\n", e.what());
    return 2;
  }
  const auto ft = file_type_from_name(quant);
  if (!ft) {
    std::fprintf(stderr, "pipellm mkmodel: error: --quant: unknown type '%s'\n", quant.c_str());
    return 2;
  }

  std::unique_ptr<GgufFile> vocab;
  if (!vocab_path.empty()) vocab = GgufFile::open(vocab_path);
  RandomModelOptions opt;
  opt.shape = shape;
  opt.file_type = *ft;
  opt.vocab = vocab.get();
  opt.seed = seed;
  opt.text_head = text_head;
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

// `pipellm mkmodel`: writes a random-weight GGUF model of a real shape.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
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

void usage(FILE* out) {
  std::fprintf(out,
               "usage: pipellm mkmodel [--preset NAME [--tiny]] [--arch A] [--layers N] [--embd N] [--ff N]\n"
               "                       [--heads N] [--kv-heads N] [--head-dim N] [--experts N] [--experts-used N]\n"
               "                       [--expert-ff N] [--window N] [--vocab-size N] [--ctx N] [--tied]\n"
               "                       [--quant TYPE] [--vocab FROM.gguf] [--seed S] [--threads N] OUT.gguf\n"
               "  --preset NAME  a published model's shape, which the shape options change (without a\n"
               "                 preset they give the whole shape: --layers, --embd, --ff and --heads at least)\n"
               "  --tiny         the preset's family at test size (n_embd 256, 2 layers (gemma3, gemma4: 6;\n"
               "                 qwen3.6: 4, one attention interval), at most 16 experts, vocabulary 1024):\n"
               "                 every tensor kind of the real model, in KiB\n"
               "  --arch         one of:");
  for (const auto& a : model_shape_archs()) std::fprintf(out, " %s", a.c_str());
  std::fprintf(out, "\n  presets:\n");
  for (const auto& n : model_preset_names())
    std::fprintf(out, "    %-16s %s\n", n.c_str(), shape_summary(*model_preset(n)).c_str());
  std::fprintf(out, "  quant types:");
  for (const auto& n : file_type_names()) std::fprintf(out, " %s", n.c_str());
  std::fprintf(out,
               " (default: the preset's, else Q4_K_M)\n"
               "  --vocab copies the tokenizer (and so the vocabulary size) from another GGUF\n");
}

}  // namespace

int cmd_mkmodel(int argc, char** argv) {
  std::string preset, quant, vocab_path, out;
  bool tiny = false;
  // Shape options apply after the preset (and --tiny), whatever their place on the line.
  std::vector<std::function<void(ModelShape&)>> edits;
  uint64_t seed = 1;
  int threads = 0;
  ModelShape shape;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto val = [&]() -> std::string {
        if (i + 1 >= argc) throw InvalidArgument(a + " needs a value");
        return argv[++i];
      };
      auto int_edit = [&](int lo, int hi, int ModelShape::*field) {
        const int v = parse_int(a, val(), lo, hi);
        edits.push_back([v, field](ModelShape& s) { s.*field = v; });
      };
      constexpr int kMax = 1 << 20;
      if (a == "-h" || a == "--help") {
        usage(stdout);
        return 0;
      } else if (a == "--preset") {
        preset = val();
        if (!model_preset(preset)) throw InvalidArgument("--preset: unknown preset '" + preset + "'");
      } else if (a == "--tiny") {
        tiny = true;
      } else if (a == "--arch") {
        const std::string arch = val();
        const auto& archs = model_shape_archs();
        if (std::find(archs.begin(), archs.end(), arch) == archs.end())
          throw InvalidArgument("--arch: '" + arch + "' cannot be generated (see --help)");
        edits.push_back([arch](ModelShape& s) { s.arch = arch; });
      } else if (a == "--layers") {
        int_edit(1, 1024, &ModelShape::n_layer);
      } else if (a == "--embd") {
        int_edit(32, kMax, &ModelShape::n_embd);
      } else if (a == "--ff") {
        int_edit(32, kMax, &ModelShape::n_ff);
      } else if (a == "--heads") {
        int_edit(1, 1024, &ModelShape::n_head);
      } else if (a == "--kv-heads") {
        int_edit(1, 1024, &ModelShape::n_head_kv);
      } else if (a == "--head-dim") {
        int_edit(2, 4096, &ModelShape::head_dim);
      } else if (a == "--experts") {
        int_edit(1, 4096, &ModelShape::n_expert);
      } else if (a == "--experts-used") {
        int_edit(1, 4096, &ModelShape::n_expert_used);
      } else if (a == "--expert-ff") {
        int_edit(32, kMax, &ModelShape::n_ff_expert);
      } else if (a == "--window") {
        int_edit(1, 1 << 24, &ModelShape::sliding_window);
      } else if (a == "--vocab-size") {
        int_edit(259, 1 << 24, &ModelShape::n_vocab);
      } else if (a == "--ctx") {
        int_edit(1, 1 << 24, &ModelShape::n_ctx);
      } else if (a == "--tied") {
        edits.push_back([](ModelShape& s) { s.tied_output = true; });
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
    if (tiny && preset.empty()) throw InvalidArgument("--tiny shrinks a preset: give --preset NAME");
    if (!preset.empty()) shape = *model_preset(preset);
    if (tiny) shape = shrink_shape(shape);
    for (const auto& edit : edits) edit(shape);
    if (preset.empty()) {
      if (shape.n_layer == 0) throw InvalidArgument("give --preset NAME or --layers/--embd/... for the shape");
      if (shape.n_embd == 0 || shape.n_ff == 0 || shape.n_head == 0)
        throw InvalidArgument("--embd, --ff and --heads are needed");
      if (shape.n_head_kv == 0) shape.n_head_kv = shape.n_head;
      if (shape.n_vocab == 0 && vocab_path.empty()) shape.n_vocab = 32000;
    }
    if (quant.empty()) quant = shape.file_type;
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

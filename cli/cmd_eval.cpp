// `pipellm eval`: logits of every position of a token-id file, evaluated as one batch.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/engine_options.h"

namespace pipellm::cli {

int cmd_eval(int argc, char** argv) {
  EngineFlags ef;
  std::string ids_path, out_path;
  int batch = 0;
  CLI::App app{"pipellm eval: evaluates the whitespace-separated token ids of a file (one sequence) and writes the "
               "logits of every position as float32 [n_tokens][n_vocab], little-endian.",
               "pipellm eval"};
  add_engine_flags(app, ef);
  app.add_option("--ids-file", ids_path, "token ids to evaluate")->required();
  app.add_option("--logits", out_path, "output file")->required();
  app.add_option("--batch", batch, "tokens per forward call (default: all at once)")->check(CLI::Range(1, 1 << 24));
  if (auto code = flags::parse(app, argc, argv)) return *code;
  std::vector<int32_t> ids;
  std::string model_path;
  try {
    model_path = resolve_model(ef);
    ids = read_ids_file(ids_path);
    if (ef.ctx_size != 0 && ef.ctx_size < static_cast<int>(ids.size())) {
      throw InvalidArgument("--ids-file holds " + std::to_string(ids.size()) + " tokens, more than -c " +
                            std::to_string(ef.ctx_size));
    }
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm eval: error: %s\n", e.what());
    return 2;
  }

  const auto t0 = std::chrono::steady_clock::now();
  const int n_ctx = ef.ctx_size != 0 ? ef.ctx_size : static_cast<int>(ids.size());
  auto model = open_model(model_path, ef, n_ctx);
  const auto gpu = open_gpu_stage(*model, ef, n_ctx);
  Stage& stage = gpu ? *gpu : model->stage();
  const int V = model->config().n_vocab;
  for (int32_t id : ids) {
    if (id >= V) {
      std::fprintf(stderr, "pipellm eval: error: token id %d is outside the vocabulary of %d\n", id, V);
      return 2;
    }
  }
  const auto t1 = std::chrono::steady_clock::now();
  const int n = static_cast<int>(ids.size());
  const int chunk = batch > 0 ? batch : n;
  std::vector<float> all, part;
  all.reserve(static_cast<size_t>(n) * static_cast<size_t>(V));
  for (int i = 0; i < n; i += chunk) {
    const int m = std::min(chunk, n - i);
    std::vector<int32_t> toks(ids.begin() + i, ids.begin() + i + m);
    stage.forward(Batch::sequence(toks, i, 0, true), part);
    all.insert(all.end(), part.begin(), part.end());
  }
  const auto t2 = std::chrono::steady_clock::now();

  FILE* f = std::fopen(out_path.c_str(), "wb");
  if (f == nullptr) throw Error("cannot write '" + out_path + "'");
  const size_t written = std::fwrite(all.data(), sizeof(float), all.size(), f);
  const bool closed = std::fclose(f) == 0;
  if (written != all.size() || !closed) throw Error("writing '" + out_path + "' failed");
  const double load_s = std::chrono::duration<double>(t1 - t0).count();
  const double eval_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr, "eval: %d tokens x %d logits -> %s | load %.0f ms | %.1f tok/s (%d threads)\n", n, V,
               out_path.c_str(), load_s * 1e3, n / eval_s, model->pool().size());
  return 0;
}

}  // namespace pipellm::cli

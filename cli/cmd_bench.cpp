// `pipellm bench`: CPU prompt-processing and generation speed, set against the memory-bandwidth
// floor of decoding (bytes of weights read per token / measured copy bandwidth). With
// --device cuda[:N]: the CUDA engine benchmark (bench/cuda_bench.h: pp512, tg128 with and
// without graphs, tg128 at depth 4096, batched 64x decode).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/commands.h"
#include "cli/engine_options.h"
#ifdef PIPELLM_HAVE_CUDA
#include "bench/cuda_bench.h"
#endif

namespace pipellm::cli {
namespace {

using Clock = std::chrono::steady_clock;

// The CUDA benchmark (bench/cuda_bench.h) with this command's settings in its own flags.
struct CudaBenchArgs {
  std::string preset, quant;
  bool skip_depth = false, skip_batched = false;
  bool f16_cache = false;  // the server's path keeps no f16 copies: neither does its benchmark by default
  int profile_steps = 0;
  int mmq_max_rows = -1;  // -1: the engine's default
  int depth = 0;          // 0: the benchmark's (4096)
};

int cuda_bench(const EngineFlags& f, const CudaBenchArgs& c, int reps, bool json, int gpu) {
  std::vector<std::string> args = {"pipellm bench", "--gpu", std::to_string(gpu), "--runs", std::to_string(reps)};
  if (json) args.insert(args.end(), {"--json", "-"});
  if (!c.preset.empty()) {
    args.insert(args.end(), {"--preset", c.preset});
  } else {
    args.insert(args.end(), {"-m", resolve_model(f)});
  }
  if (!c.quant.empty()) args.insert(args.end(), {"--quant", c.quant});
  if (c.skip_depth) args.push_back("--skip-depth");
  if (c.depth > 0) args.insert(args.end(), {"--depth", std::to_string(c.depth)});
  if (c.skip_batched) args.push_back("--skip-batched");
  if (!c.f16_cache) args.push_back("--no-f16-cache");
  if (c.profile_steps > 0) args.insert(args.end(), {"--profile-steps", std::to_string(c.profile_steps)});
  if (c.mmq_max_rows >= 0) args.insert(args.end(), {"--mmq-max-rows", std::to_string(c.mmq_max_rows)});
  if (f.experts.cpu_moe) args.push_back("--cpu-moe");
  if (f.experts.n_cpu_moe > 0) args.insert(args.end(), {"--n-cpu-moe", std::to_string(f.experts.n_cpu_moe)});
  for (const TensorOverride& o : f.experts.overrides) args.insert(args.end(), {"-ot", o.text});
  if (f.experts.cache_bytes > 0) args.insert(args.end(), {"--expert-cache", std::to_string(f.experts.cache_bytes)});
  if (f.threads > 0) args.insert(args.end(), {"-t", std::to_string(f.threads)});
  std::vector<char*> av;
  for (auto& a : args) av.push_back(a.data());
#ifdef PIPELLM_HAVE_CUDA
  return cuda_bench_main(static_cast<int>(av.size()), av.data());
#else
  (void)gpu;
  throw InvalidArgument("--device cuda: this build has no CUDA");
#endif
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) return line.substr(line.find_first_not_of(' ', c + 1));
    }
  }
  return "unknown";
}

double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Copy bandwidth with every pool thread copying its share of a 256 MiB buffer: bytes read plus
// bytes written per second, best of several passes.
double copy_bandwidth(ThreadPool& pool) {
  const size_t bytes = size_t{256} << 20;
  std::vector<uint8_t> src(bytes, 1), dst(bytes, 0);
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    pool.parallel_for(static_cast<int64_t>(bytes), [&](int64_t b, int64_t e) {
      std::memcpy(dst.data() + b, src.data() + b, static_cast<size_t>(e - b));
    });
    best = std::max(best, 2.0 * static_cast<double>(bytes) / seconds(t0));
  }
  if (dst[bytes / 2] != 1) throw Error("bench: copy check failed");
  return best;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  EngineFlags ef;
  int n_prompt = 128, n_gen = 32, reps = 0;
  bool json = false;
  CudaBenchArgs cb;
  CLI::App app{"pipellm bench: prompt-processing and generation speed against the hardware limit (the "
               "memory-bandwidth floor of decoding). With --device cuda[:N] (or -ngl): the CUDA benchmark "
               "(pp512, tg128 with and without graphs, tg128 at depth 4096, batched decode).",
               "pipellm bench"};
  add_engine_flags(app, ef);
  app.add_option("-p,--n-prompt", n_prompt, "CPU: prompt tokens processed as one batch (default 128)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("-n,--n-gen", n_gen, "CPU: tokens generated one at a time (default 32)")->check(CLI::Range(1, 1 << 16));
  app.add_option("-r,--repetitions,--reps", reps, "repetitions (CPU: the best is reported, default 2; CUDA: after a "
                                                  "warm-up, mean +- sd, default 3)")
      ->check(CLI::Range(1, 100));
  app.add_flag("--json", json, "one JSON object on stdout instead of the table");
  auto* preset = app.add_option("--preset", cb.preset, "CUDA: a synthetic model of a real shape instead of -m")->group("CUDA");
  app.add_option("--quant", cb.quant, "CUDA: the synthetic model's type")->needs(preset)->group("CUDA");
  auto* skip_depth = app.add_flag("--skip-depth", cb.skip_depth, "CUDA: no tg128 at depth")->group("CUDA");
  app.add_option("--depth", cb.depth, "CUDA: the cache depth of the tg128 at depth (default 4096)")
      ->check(CLI::Range(1, 1 << 22))
      ->excludes(skip_depth)
      ->group("CUDA");
  app.add_flag("--skip-batched", cb.skip_batched, "CUDA: no batched decode")->group("CUDA");
  auto* f16 = app.add_flag("--f16-cache", cb.f16_cache,
                           "CUDA: keep f16 copies of the matrices (faster prefill, more VRAM; the server keeps none)")
                  ->group("CUDA");
  app.add_flag("--no-f16-cache", "CUDA: no f16 weight copies (the default, as the server)")->excludes(f16)->group("CUDA");
  app.add_option("--mmq-max-rows", cb.mmq_max_rows,
                 "CUDA: largest product (activation rows) on the int8 tensor-core kernel; 0: off")
      ->check(CLI::Range(0, 4096))
      ->group("CUDA");
  app.add_option("--profile-steps", cb.profile_steps, "CUDA: per-kernel profile of N decode steps")
      ->check(CLI::Range(0, 100000))
      ->group("CUDA");
  if (auto code = flags::parse(app, argc, argv)) return *code;
  std::string model_path;
  try {
    const int gpu = cuda_device_index(ef);
    if (gpu >= 0) return cuda_bench(ef, cb, reps > 0 ? reps : 3, json, gpu);
    if (!cb.preset.empty()) throw InvalidArgument("--preset needs --device cuda");
    model_path = resolve_model(ef);
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm bench: error: %s\n", e.what());
    return 2;
  }
  if (reps == 0) reps = 2;

  auto t0 = Clock::now();
  auto model = open_model(model_path, ef, ef.ctx_size != 0 ? std::max(ef.ctx_size, n_prompt + n_gen) : n_prompt + n_gen);
  const double load_s = seconds(t0);
  const ModelConfig& cfg = model->config();
  CpuStage& st = model->stage();
  const uint64_t bytes_per_token = st.weights().bytes_per_token(st.config());

  // Deterministic pseudo-random prompt ids.
  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  uint64_t x = 12345;
  for (auto& id : prompt) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(cfg.n_vocab));
  }

  std::vector<float> logits;
  st.forward(Batch::sequence({prompt[0]}, 0, 0), logits);  // warm-up: maps in every weight page

  double pp_best = 0.0, tg_best = 0.0;
  for (int r = 0; r < reps; ++r) {
    t0 = Clock::now();
    st.forward(Batch::sequence(prompt, 0, 0), logits);
    pp_best = std::max(pp_best, n_prompt / seconds(t0));
    int pos = n_prompt;
    t0 = Clock::now();
    for (int i = 0; i < n_gen; ++i) {
      const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      st.forward(Batch::sequence({next}, pos++, 0), logits);
    }
    tg_best = std::max(tg_best, n_gen / seconds(t0));
  }
  const double bw = copy_bandwidth(model->pool());
  const double floor_ms = static_cast<double>(bytes_per_token) / bw * 1e3;
  const double tg_ms = 1e3 / tg_best;
  const std::string cpu = cpu_model_name();
  const std::string general = model->file().get_string_or("general.name", "");

  if (json) {
    const nlohmann::json j = {{"model", model_path},
                              {"arch", arch_name(cfg.arch)},
                              {"n_layer", cfg.n_layer},
                              {"n_embd", cfg.n_embd},
                              {"file_bytes", model->file().file_size()},
                              {"cpu", cpu},
                              {"threads", model->pool().size()},
                              {"kv_type", tensor_type_name(st.cache().type())},
                              {"load_ms", load_s * 1e3},
                              {"n_prompt", n_prompt},
                              {"n_gen", n_gen},
                              {"pp_tok_s", pp_best},
                              {"tg_tok_s", tg_best},
                              {"tg_ms_per_token", tg_ms},
                              {"bytes_per_token", bytes_per_token},
                              {"copy_bandwidth_gb_s", bw / 1e9},
                              {"floor_ms_per_token", floor_ms},
                              {"floor_tok_s", 1e3 / floor_ms},
                              {"tg_fraction_of_floor", floor_ms / tg_ms}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("model      %s (%s, %d layers, n_embd %d, %.1f MiB)\n", model_path.c_str(), arch_name(cfg.arch),
              cfg.n_layer, cfg.n_embd, static_cast<double>(model->file().file_size()) / (1 << 20));
  std::printf("cpu        %s, %d threads, KV %s\n", cpu.c_str(), model->pool().size(),
              tensor_type_name(st.cache().type()));
  std::printf("| test | tok/s | ms/token |\n|---|---:|---:|\n");
  std::printf("| pp%d | %.2f | %.3f |\n", n_prompt, pp_best, 1e3 / pp_best);
  std::printf("| tg%d | %.3f | %.3f |\n", n_gen, tg_best, tg_ms);
  std::printf("| floor (%.1f MiB/token at %.2f GB/s copy) | %.3f | %.3f |\n",
              static_cast<double>(bytes_per_token) / (1 << 20), bw / 1e9, 1e3 / floor_ms, floor_ms);
  std::printf("tg reaches %.0f%% of the bandwidth floor (load %.0f ms)\n", 100.0 * floor_ms / tg_ms, load_s * 1e3);
  return 0;
}

}  // namespace pipellm::cli

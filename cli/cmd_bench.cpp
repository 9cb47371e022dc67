// `pipellm bench`: CPU prompt-processing and generation speed, set against the memory-bandwidth
// floor of decoding (bytes of weights read per token / measured copy bandwidth). With
// --device cuda[:N]: the CUDA engine benchmark (bench/cuda_bench.h: pp512, tg128 with and
// without graphs, tg128 at depth 4096, batched 64x decode).
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

void usage(FILE* out) {
  std::fprintf(out,
               "usage: pipellm bench [-m FILE] [-p N] [-n N] [--reps R] [--json] [options]\n"
               "  -p N               prompt tokens processed as one batch (default 128)\n"
               "  -n N               tokens generated one at a time (default 32)\n"
               "  --reps R           repetitions; the best is reported (default 2)\n"
               "  --json             one JSON object on stdout instead of the table\n"
               "With --device cuda[:N] (the CUDA benchmark; -p/-n do not apply):\n"
               "  --reps R           runs after a warm-up, mean +- sd (default 3)\n"
               "  --preset NAME --quant TYPE   a synthetic model of a real shape instead of -m\n"
               "  --skip-depth --skip-batched --no-f16-cache --profile-steps N\n%s",
               engine_flags_help());
}

// The index N of --device cuda[:N] among the arguments, or -1 when the device is the CPU.
int cuda_device_of(int argc, char** argv) {
  EngineFlags f;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--device") f.device = flag_value(argc, argv, i);
  }
  return cuda_device_index(f);
}

// Runs the CUDA benchmark with the arguments translated to its own (bench/cuda_bench.h).
int cuda_bench(int argc, char** argv, int gpu) {
  std::vector<std::string> args = {"pipellm bench", "--gpu", std::to_string(gpu)};
  bool have_model = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device") {
      ++i;
    } else if (a == "--reps") {
      args.push_back("--runs");
      args.push_back(flag_value(argc, argv, i));
    } else if (a == "--json") {
      args.push_back("--json");
      args.push_back("-");
    } else if (a == "--no-graphs") {  // the CUDA benchmark always reports both
    } else {
      have_model = have_model || a == "-m" || a == "--model" || a == "--preset";
      args.push_back(a == "--model" ? "-m" : a);
    }
  }
  if (!have_model) {
    EngineFlags f;
    args.push_back("-m");
    args.push_back(resolve_model(f));
  }
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
  try {
    const int gpu = cuda_device_of(argc, argv);
    if (gpu >= 0) return cuda_bench(argc, argv, gpu);
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm bench: error: %s\n", e.what());
    return 2;
  }
  EngineFlags ef;
  int n_prompt = 128, n_gen = 32, reps = 2;
  bool json = false;
  std::string model_path;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        usage(stdout);
        return 0;
      } else if (parse_engine_flag(argc, argv, i, ef)) {
      } else if (a == "-p") {
        n_prompt = parse_int(a, flag_value(argc, argv, i), 1, 1 << 16);
      } else if (a == "-n") {
        n_gen = parse_int(a, flag_value(argc, argv, i), 1, 1 << 16);
      } else if (a == "--reps") {
        reps = parse_int(a, flag_value(argc, argv, i), 1, 100);
      } else if (a == "--json") {
        json = true;
      } else {
        throw InvalidArgument("unknown option '" + a + "'");
      }
    }
    model_path = resolve_model(ef);
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm bench: error: %s\n", e.what());
    return 2;
  }

  auto t0 = Clock::now();
  auto model = open_model(model_path, ef, ef.ctx != 0 ? std::max(ef.ctx, n_prompt + n_gen) : n_prompt + n_gen);
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

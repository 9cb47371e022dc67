// pipellm_prefetch_bench: the CUDA engine under VRAM budgets (weights streamed from pinned host
// memory through the staging ring, docs/PREFETCH.md).
//
//   pipellm_prefetch_bench -m FILE.gguf [--budgets 1GiB,2GiB,3GiB] [--runs 3] [--slots 2]
//                          [--chunk BYTES] [--placement interleaved|first] [--json OUT]
//                          [--skip-ablation] [--skip-resident]
//
// Budgets count weights only (the convention): the staging ring and the KV cache come on
// top and are printed. For each budget: pp512 and pp2048 (one pass each: 2048 tokens per chunk),
// tg32 (graph-captured decode), the achieved streaming rate (streamed bytes per pass x passes /
// time) against the pinned host-to-device bandwidth measured in the same run, and the ablation
// with overlap disabled (each layer copied only when compute reaches it). Medians over --runs
// after a warm-up. A resident run (no budget) gives the compute-only reference.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cuda/cuda_stage.h"
#include "engine/cuda/weight_streamer.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/expert_placement.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"
#include "engine/model/vram_plan.h"
#include "kernels/cuda/cuda_raii.h"

namespace pipellm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Pinned (mapped, like the streamer's images) host memory to the device, 1 GiB copies.
double h2d_bandwidth_gbs() {
  const size_t bytes = size_t{1} << 30;
  cuda::MappedHostBuffer h(bytes);
  for (size_t i = 0; i < bytes; i += 4096) h.host()[i] = static_cast<uint8_t>(i >> 12);
  cuda::DeviceBuffer<uint8_t> d(bytes);
  cuda::Stream s;
  cuda::Event e0, e1;
  std::vector<double> gbs;
  for (int i = 0; i < 8; ++i) {
    e0.record(s.get());
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(d.get(), h.host(), bytes, cudaMemcpyHostToDevice, s.get()));
    e1.record(s.get());
    e1.synchronize();
    if (i >= 2) gbs.push_back(static_cast<double>(bytes) / (e1.elapsed_since(e0) * 1e-3) / 1e9);
  }
  return median(gbs);
}

std::vector<int32_t> prompt(int n, int n_vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint64_t s = 12345;
  for (auto& x : t) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(n_vocab));
  }
  return t;
}

struct Row {
  std::string name;
  uint64_t budget = 0;
  bool overlap = true;
  std::string plan;
  uint64_t resident = 0, streamed = 0, ring = 0, kv = 0, pinned = 0;
  double pp512 = 0, pp2048 = 0, tg32 = 0;            // tokens/s
  double gbs512 = 0, gbs2048 = 0, gbs_tg = 0;       // streaming rate
};

template <class F>
double timed(int runs, F f) {
  f();  // warm-up (and graph capture)
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(seconds_since(t0));
  }
  return median(t);
}

Row measure(const std::string& name, const ModelConfig& cfg, const ModelWeights& w, const cuda::CudaStageOptions& o,
            int runs) {
  Row r;
  r.name = name;
  r.budget = o.streaming.vram_budget;
  r.overlap = o.streaming.streamer.overlap;
  const auto t0 = Clock::now();
  cuda::CudaStage st(cfg, w, true, true, o);
  const double setup = seconds_since(t0);
  const VramPlanInput in = vram_plan_input(cfg, w, o.n_slots, o.n_ctx, 0);
  r.kv = in.kv_bytes;
  if (st.streamed()) {
    const VramPlan& p = st.streamed()->plan();
    r.plan = p.summary();
    r.resident = p.resident_weight_bytes;
    r.streamed = p.streamed_bytes;
    r.ring = p.ring_bytes;
    r.pinned = p.host_pinned_bytes;
  } else {
    r.plan = "all resident";
    r.resident = st.weight_device_bytes();
  }
  std::printf("%-22s setup %.1f s: %s\n", name.c_str(), setup, r.plan.c_str());
  std::fflush(stdout);
  std::vector<float> out;
  const auto p512 = prompt(512, cfg.n_vocab), p2048 = prompt(2048, cfg.n_vocab);
  const double t512 = timed(runs, [&] { st.forward(Batch::sequence(p512, 0, 0), out); });
  const double t2048 = timed(runs, [&] { st.forward(Batch::sequence(p2048, 0, 0), out); });
  const double ttg = timed(runs, [&] {
    Batch b;
    b.add(1, 0, 0, true);
    StepOutput next;
    for (int i = 0; i < 32; ++i) {
      st.step(b, next, false);
      b.tokens[0] = next.tokens[0];
      ++b.pos[0];
    }
  });
  r.pp512 = 512 / t512;
  r.pp2048 = 2048 / t2048;
  r.tg32 = 32 / ttg;
  const double sb = static_cast<double>(r.streamed);
  r.gbs512 = sb / t512 / 1e9;
  r.gbs2048 = sb / t2048 / 1e9;
  r.gbs_tg = sb * 32 / ttg / 1e9;
  return r;
}

std::vector<uint64_t> parse_budgets(const std::string& s) {
  std::vector<uint64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(parse_byte_size(item, "--budgets"));
  return v;
}

int usage() {
  std::fprintf(stderr,
               "usage: pipellm_prefetch_bench -m FILE.gguf [--budgets 1GiB,2GiB,3GiB] [--runs N] [--slots N]\n"
               "                              [--chunk BYTES] [--placement interleaved|first] [--json OUT]\n"
               "                              [--skip-ablation] [--skip-resident] [--cpu-rows F|auto,...] [--threads N]\n");
  return 2;
}

int run(int argc, char** argv) {
  std::string file, json, budgets_arg = "1GiB,2GiB,3GiB", placement = "interleaved";
  int runs = 3, slots = 2, threads = 0;
  size_t chunk = 0;
  std::vector<double> cpu_rows;  // also run each budget with this share of the streamed rows on the CPU
  bool ablation = true, resident = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw InvalidArgument(a + " needs a value");
      return argv[++i];
    };
    if (a == "-m") file = next();
    else if (a == "--budgets") budgets_arg = next();
    else if (a == "--runs") runs = std::stoi(next());
    else if (a == "--slots") slots = std::stoi(next());
    else if (a == "--chunk") chunk = parse_byte_size(next(), "--chunk");
    else if (a == "--placement") placement = next();
    else if (a == "--json") json = next();
    else if (a == "--skip-ablation") ablation = false;
    else if (a == "--skip-resident") resident = false;
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--cpu-rows") {
      std::stringstream ss(next());
      for (std::string f; std::getline(ss, f, ',');) {
        const std::optional<double> share = parse_cpu_rows_share(f);
        if (!share) return usage();
        cpu_rows.push_back(*share);
      }
    } else return usage();
  }
  if (file.empty() || (placement != "interleaved" && placement != "first")) return usage();
  if (cuda::device_count() == 0) {
    std::fprintf(stderr, "pipellm_prefetch_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  PIPELLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double h2d = h2d_bandwidth_gbs();
  auto gguf = GgufFile::open(file);
  const ModelConfig cfg = ModelConfig::from_gguf(*gguf);
  const ModelWeights w = ModelWeights::load(*gguf, cfg, LayerRange::all(cfg), true, true);
  std::printf("model %s; device %s; pinned host-to-device %.1f GB/s; slots %d, chunk %zu, placement %s\n",
              file.c_str(), prop.name, h2d, slots, chunk, placement.c_str());

  cuda::CudaStageOptions base;
  base.n_ctx = 2048 + 64;
  base.n_slots = 1;
  base.max_batch_tokens = 2048;  // pp2048 in one pass: streamed bytes cross PCIe once
  base.use_graphs = true;
  std::vector<Row> rows;
  if (resident) rows.push_back(measure("resident", cfg, w, base, runs));
  for (uint64_t b : parse_budgets(budgets_arg)) {
    for (bool overlap : {true, false}) {
      if (!overlap && !ablation) continue;
      cuda::CudaStageOptions o = base;
      o.streaming.vram_budget = b;
      o.streaming.budget_weights_only = true;
      o.streaming.placement = placement == "first" ? StreamPlacement::ResidentFirst : StreamPlacement::Interleaved;
      o.streaming.streamer.slots = slots;
      o.streaming.streamer.chunk_bytes = chunk;
      o.streaming.streamer.overlap = overlap;
      rows.push_back(measure(format_bytes(b) + (overlap ? "" : " no-overlap"), cfg, w, o, runs));
    }
    for (double f : cpu_rows) {  // host_rows.h: decode multiplies that share of the streamed rows on the CPU
      cuda::CudaStageOptions o = base;
      o.streaming.vram_budget = b;
      o.streaming.budget_weights_only = true;
      o.streaming.streamer.slots = slots;
      o.streaming.cpu_rows = f;
      o.host_threads = threads;
      char name[64];
      if (f < 0) std::snprintf(name, sizeof name, " cpu-rows auto");
      else std::snprintf(name, sizeof name, " cpu-rows %.2f", f);
      rows.push_back(measure(format_bytes(b) + name, cfg, w, o, runs));
    }
  }

  std::printf("\n| run | resident weights | streamed/pass | ring | pp512 tok/s | pp2048 tok/s | tg32 tok/s |"
              " stream GB/s pp512 / pp2048 / tg32 | of H2D (%.1f GB/s) |\n|---|---|---|---|---|---|---|---|---|\n",
              h2d);
  for (const Row& r : rows) {
    std::printf("| %s | %s | %s | %s | %.0f | %.0f | %.1f | %.1f / %.1f / %.1f | %.0f%% / %.0f%% / %.0f%% |\n",
                r.name.c_str(), format_bytes(r.resident).c_str(), format_bytes(r.streamed).c_str(),
                format_bytes(r.ring).c_str(), r.pp512, r.pp2048, r.tg32, r.gbs512, r.gbs2048, r.gbs_tg,
                100 * r.gbs512 / h2d, 100 * r.gbs2048 / h2d, 100 * r.gbs_tg / h2d);
  }
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (!f) throw Error("cannot write " + json);
    std::fprintf(f, "{\"model\": \"%s\", \"device\": \"%s\", \"h2d_gbs\": %.2f, \"slots\": %d, \"chunk\": %zu, "
                    "\"placement\": \"%s\", \"rows\": [",
                 file.c_str(), prop.name, h2d, slots, chunk, placement.c_str());
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "%s\n{\"run\": \"%s\", \"budget\": %llu, \"overlap\": %s, \"plan\": \"%s\", \"resident\": %llu, "
                   "\"streamed\": %llu, \"ring\": %llu, \"kv\": %llu, \"pinned\": %llu, \"pp512\": %.2f, "
                   "\"pp2048\": %.2f, \"tg32\": %.3f, \"gbs_pp512\": %.2f, \"gbs_pp2048\": %.2f, \"gbs_tg32\": %.2f}",
                   i ? "," : "", r.name.c_str(), static_cast<unsigned long long>(r.budget), r.overlap ? "true" : "false",
                   r.plan.c_str(), static_cast<unsigned long long>(r.resident),
                   static_cast<unsigned long long>(r.streamed), static_cast<unsigned long long>(r.ring),
                   static_cast<unsigned long long>(r.kv), static_cast<unsigned long long>(r.pinned), r.pp512,
                   r.pp2048, r.tg32, r.gbs512, r.gbs2048, r.gbs_tg);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace pipellm

int main(int argc, char** argv) {
  try {
    return pipellm::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipellm_prefetch_bench: error: %s\n", e.what());
    return 1;
  }
}

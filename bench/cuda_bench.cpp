// pipellm_cuda_bench: llama-bench-style figures for the CUDA engine on one GPU.
//
//   pipellm_cuda_bench (-m FILE.gguf | --preset llama3-8b --quant Q4_K_M) [--runs 3] [--json OUT|-]
//                      [--no-f16-cache] [--mmq-max-rows N] [--dequant-slice-mib N] [--skip-depth] [--skip-batched] [--gpu N]
//                      [--depth N] [--profile-steps N] [--profile-prefill TOKENS] [--profile-batched ROWS]
//
// `pipellm bench --device cuda[:N]` runs the same code (cuda_bench_main, bench/cuda_bench.h).
//
// With --preset the model is synthesised in memory: every tensor of the real shape and the
// llama-quantize type mix (engine/model_gen), filled with random blocks whose fp16 scales are
// valid, so the kernels read exactly the bytes a real file of that shape has.
// Reports pp512, tg128 (with and without CUDA graphs and programmatic dependent launch), tg128 at depth 4096 (--depth), batched decode
// (64 sequences, 128-token prompts, 128 generated each), each mean +- sd over --runs runs after a
// warm-up; bytes of weights read per decoded token, the achieved GB/s and that as a fraction
// of the device-to-device copy bandwidth measured in the same run.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <cuda_profiler_api.h>

#include "bench/cuda_bench.h"
#include "engine/cuda/cuda_stage.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/expert_placement.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"
#include "engine/model/vram_plan.h"
#include "engine/model_gen/model_shape.h"
#include "engine/model_gen/model_plan.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cuda/cuda_raii.h"

namespace pipellm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Stat {
  double mean = 0, sd = 0;
};

Stat stat_of(const std::vector<double>& v) {
  Stat s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

// ---- synthetic model ----

struct SyntheticModel {
  ModelConfig cfg;
  std::deque<TensorView> views;
  std::vector<std::vector<uint8_t>> data;
  ModelWeights weights;
};

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

void fill_random(TensorType t, std::vector<uint8_t>& buf, uint64_t seed) {
  const auto& info = tensor_type_info(t);
  const size_t nb = buf.size() / info.block_bytes;
  const int nthreads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> th;
  for (int k = 0; k < nthreads; ++k) {
    th.emplace_back([&, k] {
      uint64_t s = seed * 1000003 + static_cast<uint64_t>(k);
      const size_t b0 = nb * k / nthreads, b1 = nb * (k + 1) / nthreads;
      for (size_t b = b0; b < b1; ++b) {
        uint8_t* p = buf.data() + b * info.block_bytes;
        for (size_t i = 0; i < info.block_bytes; i += 8) {
          const uint64_t r = splitmix(s);
          std::memcpy(p + i, &r, std::min<size_t>(8, info.block_bytes - i));
        }
        const float u = static_cast<float>(splitmix(s) >> 40) / 16777216.0f;
        switch (t) {
          case TensorType::F32: {
            const float v = (u - 0.5f) * 0.1f;
            std::memcpy(p, &v, 4);
            break;
          }
          case TensorType::F16: put_f16(p, (u - 0.5f) * 0.1f); break;
          case TensorType::BF16: {
            const uint16_t h = f32_to_bf16((u - 0.5f) * 0.1f);
            std::memcpy(p, &h, 2);
            break;
          }
          case TensorType::Q4_K:
          case TensorType::Q5_K:
          case TensorType::Q4_1:
          case TensorType::Q5_1:
            put_f16(p, 1e-3f * (1 + u));
            put_f16(p + 2, 1e-3f * (1 + u));
            break;
          case TensorType::Q6_K: put_f16(p + 208, 1e-3f * (1 + u)); break;
          case TensorType::Q2_K:
            put_f16(p + 80, 1e-3f * (1 + u));
            put_f16(p + 82, 1e-3f * (1 + u));
            break;
          case TensorType::Q3_K: put_f16(p + 108, 1e-3f * (1 + u)); break;
          default: put_f16(p, 1e-3f * (1 + u)); break;
        }
      }
    });
  }
  for (auto& x : th) x.join();
}

std::unique_ptr<SyntheticModel> synthesize(const std::string& preset, const std::string& quant) {
  const auto shape = model_preset(preset);
  if (!shape) throw InvalidArgument("unknown preset " + preset);
  const auto ft = file_type_from_name(quant);
  if (!ft) throw InvalidArgument("unknown quant " + quant);
  auto m = std::make_unique<SyntheticModel>();
  // The architecture's own recipe lists the tensors and reads the config, as for a file.
  ModelPlan mp = plan_model(*shape, *ft);
  m->cfg = std::move(mp.config);
  const ModelConfig& c = m->cfg;
  const std::vector<PlannedTensor>& plan = mp.tensors;
  uint64_t seed = 1;
  for (const auto& p : plan) {
    TensorView v;
    v.name = p.name;
    v.type = p.type;
    v.n_dims = static_cast<int>(p.ne.size());
    for (size_t i = 0; i < p.ne.size(); ++i) v.ne[i] = p.ne[i];
    v.nbytes = p.nbytes();
    m->data.emplace_back(v.nbytes);
    fill_random(p.type, m->data.back(), seed++);
    if (p.type == TensorType::MXFP4) {  // E8M0 scale bytes of 117: values below 0.01, like the others
      const size_t bb = tensor_type_info(p.type).block_bytes;
      for (size_t b = 0; b < m->data.back().size(); b += bb) m->data.back()[b] = 117;
    }
    if (p.name.find("norm") != std::string::npos) {  // norms near 1
      float* f = reinterpret_cast<float*>(m->data.back().data());
      for (int64_t i = 0; i < v.n_elements(); ++i) f[i] = 1.0f + 0.01f * static_cast<float>(i % 7);
    }
    v.data = m->data.back().data();
    m->views.push_back(v);
  }
  auto find = [&](const std::string& n) -> const TensorView* {
    for (const auto& v : m->views)
      if (v.name == n) return &v;
    return nullptr;
  };
  ModelWeights& w = m->weights;
  w.range = {0, c.n_layer};
  w.token_embd = find("token_embd.weight");
  w.output_norm = find("output_norm.weight");
  w.output = find("output.weight");
  if (!w.output) w.output = w.token_embd;
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    LayerWeights l;
    for (const TensorSpec& t : c.layer_tensors(i)) l[t.role] = find(b + t.name);
    w.layers.push_back(l);
  }
  return m;
}

// ---- measurements ----

// Bytes of the tensors a stage uploads (each once: a tied output is the embedding).
uint64_t tensor_bytes(const ModelWeights& w) {
  uint64_t total = 0;
  const auto add = [&](const TensorView* t) { total += t != nullptr ? t->nbytes : 0; };
  for (const LayerWeights& l : w.layers) {
    for (const TensorView* t : l.t) add(t);
  }
  for (const TensorView* t : {w.token_embd, w.output_norm, w.rope_freqs, w.per_layer_token_embd,
                              w.per_layer_model_proj, w.per_layer_proj_norm})
    add(t);
  if (w.output != w.token_embd) add(w.output);
  return total;
}

double copy_bandwidth_gbs() {
  const size_t bytes = size_t{1} << 30;
  cuda::DeviceBuffer<uint8_t> a(bytes), b(bytes);
  PIPELLM_CUDA_CHECK(cudaMemset(a.get(), 1, bytes));
  cuda::Event e0, e1;
  for (int i = 0; i < 3; ++i) PIPELLM_CUDA_CHECK(cudaMemcpy(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice));
  std::vector<double> gbs;
  for (int i = 0; i < 10; ++i) {
    e0.record(nullptr);
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, nullptr));
    e1.record(nullptr);
    e1.synchronize();
    gbs.push_back(2.0 * static_cast<double>(bytes) / (e1.elapsed_since(e0) * 1e-3) / 1e9);  // read + write
  }
  std::sort(gbs.begin(), gbs.end());
  return gbs[gbs.size() / 2];
}

std::vector<int32_t> prompt_tokens(int n, int n_vocab, int salt) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint64_t s = static_cast<uint64_t>(salt) + 17;
  for (auto& x : t) x = static_cast<int32_t>(splitmix(s) % static_cast<uint64_t>(n_vocab));
  return t;
}

// Prefill of `n` tokens in slot 0 from position 0: tokens per second.
double run_pp(cuda::CudaStage& st, int n) {
  std::vector<float> out;
  const auto toks = prompt_tokens(n, st.config().n_vocab, n);
  const auto t0 = Clock::now();
  st.forward(Batch::sequence(toks, 0, 0), out);
  return n / seconds_since(t0);
}

// Generates n tokens in slot 0 starting at position `depth` (the cache below must be filled),
// through Stage::step as the runtime calls it (greedy, sampled on the GPU).
double run_tg(cuda::CudaStage& st, int n, int depth) {
  st.start_sequence(0, SamplingSpec{}, {});
  Batch b;
  b.add(1, depth, 0, true);
  StepOutput out;
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    st.step(b, out, false);
    b.tokens[0] = out.tokens[0];
    ++b.pos[0];
  }
  return n / seconds_since(t0);
}

// 64 sequences: 128-token prompts (prefilled in batches), then 128 decode steps of all 64.
// Returns the aggregate generation tokens/s.
// profile: the decode steps run between cudaProfilerStart/Stop (ncu --profile-from-start off).
double run_batched(cuda::CudaStage& st, int n_seq, int n_prompt, int n_gen, double* total_tps, bool profile = false) {
  Batch b;
  std::vector<float> out;
  const auto t0 = Clock::now();
  for (int s = 0; s < n_seq; ++s) {
    const auto toks = prompt_tokens(n_prompt, st.config().n_vocab, s);
    for (int i = 0; i < n_prompt; ++i) b.add(toks[i], i, s, i == n_prompt - 1);
  }
  st.forward(b, out);
  Batch d;
  for (int s = 0; s < n_seq; ++s) {
    st.start_sequence(s, SamplingSpec{}, {});
    d.add(s + 1, n_prompt, s, true);
  }
  StepOutput next;
  if (profile) PIPELLM_CUDA_CHECK(cudaProfilerStart());
  const auto t1 = Clock::now();
  for (int i = 0; i < n_gen; ++i) {
    st.step(d, next, false);
    d.tokens = next.tokens;
    for (auto& p : d.pos) ++p;
  }
  const double gen = seconds_since(t1);
  if (profile) PIPELLM_CUDA_CHECK(cudaProfilerStop());
  *total_tps = static_cast<double>(n_seq) * (n_prompt + n_gen) / seconds_since(t0);
  return static_cast<double>(n_seq) * n_gen / gen;
}

// Bytes of K and V (f16) a decode step at depth d reads: each attention layer's keys up to d (its
// window at most); DeltaNet layers read a fixed state instead.
double kv_read_bytes(const ModelConfig& c, int d) {
  double b = 0;
  for (int il = 0; il < c.n_layer; ++il) {
    const LayerSpec& s = c.layer(il);
    if (s.mixer != Mixer::Attention) continue;
    const int keys = s.window > 0 ? std::min(d, s.window) : d;
    b += static_cast<double>(keys) * s.n_head_kv * (s.head_dim + s.head_dim_v) * 2.0;
  }
  return b;
}

template <class F>
Stat repeat(int runs, F f) {
  f();  // warm-up
  std::vector<double> v;
  for (int i = 0; i < runs; ++i) v.push_back(f());
  return stat_of(v);
}

int usage() {
  std::fprintf(stderr,
               "usage: pipellm_cuda_bench (-m FILE.gguf | --preset NAME --quant TYPE) [--runs N] [--json OUT|-]\n"
               "                          [--no-f16-cache] [--mmq-max-rows N] [--matvec-max-rows N]\n"
               "                          [--dequant-slice-mib N] [--skip-depth]\n"
               "                          [--skip-batched] [--depth N] [--profile-steps N] [--mmq-stages 0|2]\n"
               "                          [--mmq-blocks-per-sm N] [--mmq-shared-scales 0|1] [--mmq-f16 0|1]\n"
               "                          [--mmq-f16-k-parts 0|2|4] [--mmq-f16-experts-from TOKENS]\n"
               "                          [--mmq-fuse 0|1] [--attention-blocks-per-sm N] [--attention-mma 0|1]\n"
               "                          [--moe-fuse 0|1] [--float-split 0|1] [--matvec-flat 0|1]\n"
               "                          [--group-gptoss 0|1]\n"
               "                          [--profile-prefill TOKENS] [--profile-batched ROWS]\n"
               "                          [--gpu N] [--cpu-moe] [--n-cpu-moe N] [-ot PATTERN=CPU] [-t THREADS]\n"
               "                          [--expert-cache SIZE]\n");
  return 2;
}

}  // namespace

int cuda_bench_main(int argc, char** argv) {
  std::string file, preset, quant = "Q4_K_M", json;
  int runs = 3, gpu = 0;
  bool depth = true, batched = true;
  // The stage options of every run, the flags' ablations parsed straight into them (each run sets
  // its context and slots).
  cuda::CudaStageOptions base;
  base.max_batch_tokens = 512;
  base.resident_f16 = true;
  int profile_steps = 0, profile_prefill = 0, profile_batched = 0, depth_tokens = 4096;
  ExpertPlacementFlags experts;  // routed experts in host memory (host_experts.h)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw InvalidArgument(a + " needs a value");
      return argv[++i];
    };
    if (a == "-m") file = next();
    else if (a == "--preset") preset = next();
    else if (a == "--quant") quant = next();
    else if (a == "--runs") runs = std::stoi(next());
    else if (a == "--json") json = next();
    else if (a == "--no-f16-cache") base.resident_f16 = false;
    else if (a == "--mmq-max-rows") base.mmq_max_rows = std::stoi(next());
    else if (a == "--matvec-max-rows") base.matvec_max_rows = std::stoi(next());
    else if (a == "--dequant-slice-mib") base.dequant_slice_mib = std::stoi(next());
    else if (a == "--mmq-stages") base.mmq_tuning.stages = std::stoi(next());
    else if (a == "--mmq-blocks-per-sm") base.mmq_tuning.blocks_per_sm = std::stoi(next());
    else if (a == "--mmq-shared-scales") base.mmq_tuning.shared_scales = std::stoi(next()) != 0;
    else if (a == "--mmq-fuse") base.mmq_tuning.fuse = std::stoi(next()) != 0;
    else if (a == "--mmq-f16") base.mmq_tuning.f16 = std::stoi(next()) != 0;
    else if (a == "--mmq-f16-k-parts") base.mmq_tuning.f16_k_parts = std::stoi(next());
    else if (a == "--mmq-f16-experts-from") base.mmq_tuning.f16_experts_from = std::stoi(next());
    else if (a == "--attention-blocks-per-sm") base.attention_blocks_per_sm = std::stoi(next());
    else if (a == "--attention-mma") base.attention_tensor_cores = std::stoi(next()) != 0;
    else if (a == "--moe-fuse") base.fuse_expert_decode = std::stoi(next()) != 0;
    else if (a == "--float-split") base.float_matvec_split = std::stoi(next()) != 0;
    else if (a == "--matvec-flat") base.matvec_flat_items = std::stoi(next()) != 0;
    else if (a == "--group-gptoss") base.group_gptoss_experts = std::stoi(next()) != 0;
    else if (a == "--skip-depth") depth = false;
    else if (a == "--depth") depth_tokens = std::stoi(next());
    else if (a == "--skip-batched") batched = false;
    else if (a == "--profile-steps") profile_steps = std::stoi(next());
    else if (a == "--profile-prefill") profile_prefill = std::stoi(next());
    else if (a == "--profile-batched") profile_batched = std::stoi(next());
    else if (a == "--gpu") gpu = std::stoi(next());
    else if (a == "--cpu-moe" || a == "-cmoe") experts.cpu_moe = true;
    else if (a == "--n-cpu-moe" || a == "-ncmoe") experts.n_cpu_moe = std::stoi(next());
    else if (a == "-ot" || a == "--override-tensor") {
      for (TensorOverride& o : parse_tensor_overrides(next())) experts.overrides.push_back(std::move(o));
    } else if (a == "--expert-cache") {
      experts.cache_bytes = parse_byte_size(next(), "--expert-cache");
    } else if (a == "-t" || a == "--threads") base.host_threads = std::stoi(next());
    else return usage();
  }
  if (file.empty() == preset.empty() || runs < 1 || profile_batched < 0 || profile_batched > 64 || depth_tokens < 1 ||
      profile_prefill < 0 || profile_prefill > static_cast<int>(base.max_batch_tokens) ||
      base.attention_blocks_per_sm < 1 || base.attention_blocks_per_sm > 32) {
    return usage();
  }
  if (profile_batched > 0) batched = true;
  if (cuda::device_count() <= gpu || gpu < 0) {
    std::fprintf(stderr, "pipellm_cuda_bench: no CUDA device %d\n", gpu);
    return 1;
  }
  // With the JSON on stdout, the human-readable lines go to stderr.
  FILE* txt = json == "-" ? stderr : stdout;
  PIPELLM_CUDA_CHECK(cudaSetDevice(gpu));
  cudaDeviceProp prop{};
  PIPELLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, gpu));
  const double copy_gbs = copy_bandwidth_gbs();

  std::unique_ptr<GgufFile> gguf;
  std::unique_ptr<SyntheticModel> synth;
  ModelConfig cfg;
  ModelWeights weights;
  std::string label;
  const auto tl = Clock::now();
  if (!file.empty()) {
    gguf = GgufFile::open(file);
    cfg = ModelConfig::from_gguf(*gguf);
    weights = ModelWeights::load(*gguf, cfg, LayerRange::all(cfg), true, true);
    label = file;
  } else {
    synth = synthesize(preset, quant);
    cfg = synth->cfg;
    weights = synth->weights;
    label = preset + " " + quant + " (synthetic)";
  }
  const double bpt = static_cast<double>(weights.bytes_per_token(cfg));
  const std::vector<bool> host_experts = host_expert_layers(cfg, experts);
  if (const std::string d = describe_host_experts(host_experts); !d.empty()) std::fprintf(txt, "placement: %s\n", d.c_str());
  std::fprintf(txt, "model: %s, %.2f GB read per token; device %s, copy bandwidth %.0f GB/s; synthesis %.1f s\n",
              label.c_str(), bpt / 1e9, prop.name, copy_gbs, seconds_since(tl));

  struct Row {
    std::string name;
    Stat s;
    double bytes_per_token;  // weights (and KV at depth) a decode step reads per token; 0: not decode
  };
  base.device = gpu;
  base.host_experts = host_experts;
  base.expert_cache_bytes = experts.cache_bytes;
  std::vector<Row> rows;
  if (profile_batched <= 0) {
    cuda::CudaStageOptions o = base;
    o.n_ctx = depth ? depth_tokens + 256 : 1024;
    o.n_slots = 1;
    const auto tu = Clock::now();
    cuda::CudaStage st(cfg, weights, true, true, o);
    const double up_s = seconds_since(tu);
    std::fprintf(txt, "upload %.1f s, %.2f GB on the device (%.1f GB/s of tensor bytes, stage setup included)\n", up_s,
                 st.weight_device_bytes() / 1e9, tensor_bytes(weights) / 1e9 / up_s);
    std::fprintf(txt, "%s\n", st.memory_report().format().c_str());  // the figures below are at this memory
    if (profile_steps > 0) {  // only decode steps (graphs + PDL), for a profiler (ncu --profile-from-start off)
      st.set_use_graphs(true);
      run_tg(st, 8, 0);  // warm-up: the graphs are captured outside the profiled range
      PIPELLM_CUDA_CHECK(cudaProfilerStart());
      const double tps = run_tg(st, profile_steps, 0);
      PIPELLM_CUDA_CHECK(cudaProfilerStop());
      std::fprintf(txt, "profile: %d decode steps: %.1f tok/s\n", profile_steps, tps);
      return 0;
    }
    if (profile_prefill > 0) {  // one prompt chunk of TOKENS after a warm-up one, for a profiler
      run_pp(st, profile_prefill);
      PIPELLM_CUDA_CHECK(cudaProfilerStart());
      const double tps = run_pp(st, profile_prefill);
      PIPELLM_CUDA_CHECK(cudaProfilerStop());
      std::fprintf(txt, "profile: a %d-token prompt: %.1f tok/s\n", profile_prefill, tps);
      return 0;
    }
    rows.push_back({"pp512", repeat(runs, [&] { return run_pp(st, 512); }), 0.0});
    st.set_use_graphs(true);
    rows.push_back({"tg128", repeat(runs, [&] { return run_tg(st, 128, 0); }), bpt});
    st.set_pdl(false);
    rows.push_back({"tg128 (graphs, no PDL)", repeat(runs, [&] { return run_tg(st, 128, 0); }), bpt});
    st.set_use_graphs(false);
    rows.push_back({"tg128 (no graphs, no PDL)", repeat(runs, [&] { return run_tg(st, 128, 0); }), bpt});
    st.set_pdl(true);
    rows.push_back({"tg128 (no graphs, PDL)", repeat(runs, [&] { return run_tg(st, 128, 0); }), bpt});
    if (depth) {
      st.set_use_graphs(true);
      run_pp(st, depth_tokens);  // fills the cache of slot 0 up to the depth
      rows.push_back({"tg128 @ d" + std::to_string(depth_tokens),
                      repeat(runs, [&] { return run_tg(st, 128, depth_tokens); }),
                      bpt + kv_read_bytes(cfg, depth_tokens + 64)});
    }
    // The expert cache's hit rate over the runs above.
    if (st.host_experts() != nullptr && st.host_experts()->cache() != nullptr) {
      std::fprintf(txt, "after the runs: %s\n", st.memory_report().format().c_str());
    }
  }
  if (batched) {
    cuda::CudaStageOptions o = base;
    o.n_ctx = 256;
    o.n_slots = 64;
    cuda::CudaStage st(cfg, weights, true, true, o);
    std::fprintf(txt, "batched stage: %.2f GB of weights on the device\n", st.weight_device_bytes() / 1e9);
    std::fprintf(txt, "%s\n", st.memory_report().format().c_str());
    double total = 0;
    if (profile_batched > 0) {  // 2 decode steps of ROWS sequences (after a warm-up), for a profiler
      run_batched(st, profile_batched, 128, 2, &total);
      run_batched(st, profile_batched, 128, 2, &total, true);
      std::fprintf(txt, "profile: 2 decode steps of %d sequences\n", profile_batched);
      return 0;
    }
    rows.push_back({"batched 16x128 gen", repeat(runs, [&] { return run_batched(st, 16, 128, 128, &total); }), 0.0});
    std::fprintf(txt, "batched 16: %.0f tok/s including the 16x128 prompts\n", total);
    rows.push_back({"batched 64x128 gen", repeat(runs, [&] { return run_batched(st, 64, 128, 128, &total); }), 0.0});
    std::fprintf(txt, "batched 64: %.0f tok/s including the 64x128 prompts\n", total);
  }

  std::fprintf(txt, "\n| test | tok/s (mean +- sd, %d runs) | GB/s | of copy bw |\n| --- | --- | --- | --- |\n", runs);
  for (const auto& r : rows) {
    if (r.bytes_per_token > 0) {
      const double gbs = r.bytes_per_token * r.s.mean / 1e9;
      std::fprintf(txt, "| %s | %.1f +- %.1f | %.0f | %.0f%% |\n", r.name.c_str(), r.s.mean, r.s.sd, gbs,
                   100.0 * gbs / copy_gbs);
    } else {
      std::fprintf(txt, "| %s | %.1f +- %.1f | | |\n", r.name.c_str(), r.s.mean, r.s.sd);
    }
  }
  if (!json.empty()) {
    FILE* f = json == "-" ? stdout : std::fopen(json.c_str(), "w");
    if (!f) throw Error("cannot write " + json);
    std::fprintf(f,
                 "{\"model\": \"%s\", \"device\": \"%s\", \"runs\": %d, \"bytes_per_token\": %.0f, "
                 "\"copy_gbs\": %.1f, \"results\": [",
                 label.c_str(), prop.name, runs, bpt, copy_gbs);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f, "%s{\"test\": \"%s\", \"tok_s\": %.2f, \"sd\": %.2f", i ? ", " : "", r.name.c_str(), r.s.mean,
                   r.s.sd);
      if (r.bytes_per_token > 0) {
        const double gbs = r.bytes_per_token * r.s.mean / 1e9;
        std::fprintf(f, ", \"gb_s\": %.1f, \"of_copy\": %.3f", gbs, gbs / copy_gbs);
      }
      std::fprintf(f, "}");
    }
    std::fprintf(f, "]}\n");
    if (f != stdout) std::fclose(f);
  }
  return 0;
}

}  // namespace pipellm

#include "engine/pipeline/plan_check.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "engine/model/model_config.h"
#include "engine/pipeline/gpu_split.h"

namespace pipellm {

namespace {

std::string gib(double b) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

bool local_host(const std::string& host) {
  if (host.empty() || host == "localhost" || host == "127.0.0.1") return true;
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 && host == name;
}

// The KV cache bytes to hold, safe from overflow: the planner's figure when the plain bound
// (every layer keeping every position, in floating point) shows it cannot have wrapped around.
double kv_need(uint64_t planned, uint64_t positions, const ModelSizes& m) {
  double per_position = 0.0;
  for (uint64_t b : m.layer_kv_bytes_per_token) per_position += static_cast<double>(b);
  const double bound = static_cast<double>(positions) * per_position;
  return bound < 1e18 ? static_cast<double>(planned) : bound;
}

std::string gpus_text(int n) { return n == 0 ? "no GPU" : std::to_string(n) + " GPU" + (n == 1 ? "" : "s"); }

// The model's sizes, or the reason the engine cannot run it (an unknown architecture, ...).
template <class Kv>
ModelSizes sizes_of(const GgufFile& f, const Kv& kv, const std::string& where) {
  try {
    const ModelConfig mc = ModelConfig::from_gguf(f);
    return ModelSizes::from_gguf(f, mc, kv);
  } catch (const Error& e) {
    throw ConfigError(where + ": the model cannot be run: " + e.what());
  }
}

}  // namespace

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

int visible_gpu_count() {
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) {
    const std::string s = v;
    if (s.empty() || s == "-1" || s == "none") return 0;
    int n = 1;
    for (char c : s) n += c == ',';
    return n;
  }
  std::error_code ec;
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    (void)e;
    ++n;
  }
  return n;
}

PartitionPlan check_stage_plan(const PipelineConfig& cfg, const GgufFile& model, int n_ranks, uint64_t local_memory,
                               int local_gpus) {
  const std::string& src = cfg.source;
  if (n_ranks > 0 && n_ranks != cfg.n_stages()) {
    throw ConfigError(src + ": stages: the config has " + std::to_string(cfg.n_stages()) + " stage(s) but --np asks for " +
                      std::to_string(n_ranks) + " ranks (one rank runs one stage)");
  }
  const ModelSizes sizes = sizes_of(model, cfg, src);
  PartitionPlan plan;
  try {
    plan = plan_partition(sizes, PlanInput::from_config(cfg, ModelConfig::from_gguf(model)));
  } catch (const InvalidArgument& e) {
    throw ConfigError(src + ": " + e.what() + " (`pipellm plan --config " + src + "` shows the plan)");
  }
  for (size_t r = 0; r < cfg.stages.size(); ++r) {
    const StageSpec& s = cfg.stages[r];
    if (!local_host(s.host)) continue;
    const std::string where = src + ":" + std::to_string(s.line) + ": stage " + std::to_string(r) + " (" + s.device + ")";
    if (s.is_gpu() && s.device_index >= local_gpus) {
      throw ConfigError(where + ": this machine has " + gpus_text(local_gpus) + " (cuda:0.." +
                        (local_gpus > 0 ? "cuda:" + std::to_string(local_gpus - 1) : std::string("none")) + ")");
    }
    const StagePlan& p = plan.stages[r];
    // A CPU stage maps its weights and allocates the KV cache and scratch: those must fit.
    const uint64_t positions = static_cast<uint64_t>(cfg.context_length) * static_cast<uint64_t>(cfg.max_sequences);
    const double kv = kv_need(p.kv_bytes, positions, sizes);
    if (!s.is_gpu() && local_memory > 0 && kv + static_cast<double>(p.scratch_bytes) > static_cast<double>(local_memory)) {
      throw ConfigError(where + ": needs " + gib(kv) + " for its KV cache (" + std::to_string(cfg.context_length) +
                        " positions x " + std::to_string(cfg.max_sequences) + " sequences) and " + gib(p.scratch_bytes) +
                        " of scratch, but this machine has " + gib(local_memory) +
                        " of memory; lower context_length or max_sequences");
    }
  }
  return plan;
}

void check_inprocess_fit(const GgufFile& model, int n_ctx, int n_slots, KvType kv, const std::string& device,
                         uint64_t local_memory, int local_gpus) {
  const std::vector<int> listed = device == "cpu" ? std::vector<int>{} : listed_gpus(device);
  const int dev = device == "cpu" ? -1 : listed.empty() ? 0 : listed.front();
  if (dev >= 0 && dev >= local_gpus) {
    throw InvalidArgument("--device " + device + ": this machine has " + gpus_text(local_gpus));
  }
  const ModelSizes sizes = sizes_of(model, kv, "--model");
  PlanInput in;
  in.n_stages = 1;
  in.kv_positions = static_cast<uint64_t>(n_ctx) * static_cast<uint64_t>(n_slots);
  in.context_length = n_ctx;
  in.max_sequences = n_slots;
  in.scratch_bytes = 0;
  PartitionPlan plan;
  try {
    plan = plan_partition(sizes, in);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string("--model: ") + e.what());
  }
  const double kv_bytes = kv_need(plan.stages.front().kv_bytes, in.kv_positions, sizes);
  if (dev < 0 && local_memory > 0 && kv_bytes > static_cast<double>(local_memory)) {
    throw InvalidArgument("--ctx " + std::to_string(n_ctx) + " x --slots " + std::to_string(n_slots) + ": the KV cache needs " +
                          gib(kv_bytes) + " but this machine has " + gib(local_memory) + " of memory");
  }
}

}  // namespace pipellm

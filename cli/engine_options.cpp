#include "cli/engine_options.h"

#include <unistd.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "base/error.h"
#include "cli/model_path.h"
#include "engine/devices/device_stage.h"
#include "engine/model/vram_plan.h"
#include "flags/offload_flags.h"

namespace pipellm::cli {

void add_engine_flags(CLI::App& app, EngineFlags& f) {
  flags::add_model_flags(app, f, PIPELLM_WITH_CUDA, /*parallel=*/false);
  flags::add_expert_flags(app, f.experts);
  flags::add_cpu_rows_flag(app, f.cpu_rows);
  flags::add_gpu_split_flags(app, f.split);
  app.add_option_function<std::string>(
         "--kv-type",
         [&f](const std::string& v) {
           if (v != "f16" && v != "f32") throw CLI::ValidationError("--kv-type", "'" + v + "' is not f16 or f32");
           f.kv_type = v == "f16" ? TensorType::F16 : TensorType::F32;
         },
         "KV cache element type of both sides: f16 (default) or f32")
      ->group("Model");
  app.add_flag_callback("--no-graphs", [&f] { f.graphs = false; },
                        "CUDA: launch each decode step's kernels one by one instead of replaying a captured graph")
      ->group("Model");
  app.add_option_function<std::string>(
         "--vram-budget",
         [&f](const std::string& v) {
           try {
             f.vram_budget = parse_byte_size(v, "--vram-budget");
           } catch (const std::exception& e) {
             throw CLI::ValidationError("--vram-budget", e.what());
           }
         },
         "CUDA: GPU memory for the model (e.g. 2GiB); layers beyond it stream from pinned host memory")
      ->group("Model");
}

namespace {

class UsageFormatter : public CLI::Formatter {
 public:
  explicit UsageFormatter(std::string usage) : usage_(std::move(usage)) {}
  std::string make_usage(const CLI::App*, std::string) const override { return "Usage: " + usage_ + "\n"; }

 private:
  std::string usage_;
};

}  // namespace

void set_usage(CLI::App& app, const std::string& usage) {
  auto f = std::make_shared<UsageFormatter>(usage);
  f->column_width(app.get_formatter()->get_column_width());
  app.formatter(f);
}

std::string default_model_path() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) {
#ifdef PIPELLM_DEFAULT_MODEL
    return PIPELLM_DEFAULT_MODEL;
#else
    return "models/default.gguf";
#endif
  }
  const auto prefix = exe.parent_path().parent_path();
  // An installed <prefix>/bin/pipellm (cmake --install, the .deb) -> <prefix>/share/pipellm/models;
  // <repo>/<build>/cli/pipellm -> <repo>/models; <prefix>/models (a tree laid out by hand).
  const auto installed = prefix / "share" / "pipellm" / "models" / "default.gguf";
  for (const auto& candidate : {installed, prefix.parent_path() / "models" / "default.gguf",
                                prefix / "models" / "default.gguf"}) {
    if (std::filesystem::is_regular_file(candidate, ec)) return candidate.string();
  }
#if defined(PIPELLM_DEFAULT_MODEL) && defined(PIPELLM_BUILD_DIR)
  // The source tree's model serves a binary still in its build tree (a build directory outside
  // the repository); an installed copy must not depend on the tree it was built from.
  const auto build = std::filesystem::weakly_canonical(PIPELLM_BUILD_DIR, ec);
  if (!ec) {
    const auto rel = exe.lexically_relative(build);
    if (!rel.empty() && *rel.begin() != "..") return PIPELLM_DEFAULT_MODEL;
  }
#endif
  return installed.string();  // absent: named in resolve_model's error
}

std::string resolve_model(const EngineFlags& f) {
  if (f.vram_budget != 0 && f.device == "cpu") throw InvalidArgument("--vram-budget needs --device cuda[:N]");
  const std::string path = f.model.empty() ? default_model_path() : f.model;
  if (const std::string why = model_path_problem(path); !why.empty()) {
    throw InvalidArgument("model file '" + path + "' " + why + (f.model.empty() ? " (the default model; pass -m FILE)" : ""));
  }
  return path;
}

std::unique_ptr<CpuModel> open_model(const std::string& path, const EngineFlags& f, int n_ctx, int n_slots) {
  CpuModelOptions opt;
  opt.n_threads = f.threads;
  opt.stage.n_ctx = n_ctx;
  opt.stage.n_slots = n_slots;
  opt.stage.kv_type = f.kv_type;
  opt.stage.kv_type_k = f.cache_type_k;
  opt.stage.kv_type_v = f.cache_type_v;
  return CpuModel::open(path, opt);
}

namespace {

// Before the file is read any layer count works: more than a model has.
constexpr int kAnyLayerCount = 1 << 16;

std::string one_device(const EngineFlags& f, int n_layer) {
  return one_gpu_device(f.device, flags::placement_request(f.device, f.split), n_layer, "pipellm");
}

}  // namespace

int cuda_device_index(const EngineFlags& f) { return pipellm::cuda_device_index(one_device(f, kAnyLayerCount)); }

std::unique_ptr<Stage> open_gpu_stage(const CpuModel& cpu, const EngineFlags& f, int n_ctx, int n_slots) {
  DeviceStageOptions o;
  o.kv_type_k = f.cache_type_k.value_or(f.kv_type);
  o.kv_type_v = f.cache_type_v.value_or(f.kv_type);
  o.device = one_device(f, cpu.config().n_layer);
  o.n_ctx = n_ctx;
  o.n_slots = n_slots;
  o.graphs = f.graphs;
  o.vram_budget = f.vram_budget;
  o.gpu_layers = f.n_gpu_layers.value_or(-1);
  o.experts = f.experts;
  o.host_threads = f.threads;
  o.cpu_rows = f.cpu_rows;
  // The auto-fit decision and what the stage put on the device, beside the other load lines.
  o.log = [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); };
  return open_cuda_stage(cpu.file(), cpu.config(), o);
}

std::vector<int32_t> read_ids_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument("--ids-file: cannot open '" + path + "'");
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != word.size() || id < 0 || id > INT32_MAX) {
      throw InvalidArgument("--ids-file " + path + ": '" + word + "' is not an integer in [0, " +
                            std::to_string(INT32_MAX) + "]");
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  if (ids.empty()) throw InvalidArgument("--ids-file: '" + path + "' holds no token ids");
  return ids;
}

}  // namespace pipellm::cli

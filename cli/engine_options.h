// Flags shared by the engine commands (generate, eval, bench): model path, threads, context,
// KV cache type, device (CLI11, llama.cpp's spellings); and what every sub-command's CLI11 parser
// shares besides (the usage line of --help).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/cpu/cpu_model.h"
#include "engine/model/expert_placement.h"
#include "engine/model/stage.h"
#include "flags/gpu_flags.h"
#include "flags/llama_flags.h"

namespace pipellm::cli {

// The model flags every engine command shares (llama.cpp's, flags/llama_flags.h) and the
// engine's own.
struct EngineFlags : flags::ModelFlags {
  TensorType kv_type = TensorType::F16;  // --kv-type: both cache sides unless -ctk / -ctv
  bool graphs = true;         // CUDA: decode steps as CUDA graphs (--no-graphs: eager launches)
  uint64_t vram_budget = 0;   // CUDA: bytes of GPU memory for weights + KV + staging; 0: no limit
  ExpertPlacementFlags experts;  // CUDA: --cpu-moe, --n-cpu-moe, -ot
  double cpu_rows = 0.0;         // CUDA: --cpu-rows
  flags::GpuSplitFlags split;    // -sm, -ts, -mg: these commands run on one GPU (one_gpu_device)
};

// Adds the shared model flags, the expert placement flags and --kv-type, --no-graphs,
// --vram-budget to `app`.
void add_engine_flags(CLI::App& app, EngineFlags& f);

// The model shipped with the repository: <exe dir>/../share/pipellm/models/default.gguf (installed),
// <exe dir>/../../models/default.gguf (the repository, from <repo>/<build>/cli), or
// <exe dir>/../models/default.gguf; failing those, for a binary in its build tree only,
// <source dir>/models/default.gguf (compile definitions PIPELLM_DEFAULT_MODEL, PIPELLM_BUILD_DIR).
std::string default_model_path();

// The model to open (flag or default); throws InvalidArgument when the file does not exist.
std::string resolve_model(const EngineFlags& f);

// Opens the model on the requested device (CPU only for now) with n_ctx positions.
std::unique_ptr<CpuModel> open_model(const std::string& path, const EngineFlags& f, int n_ctx, int n_slots = 1);

// --device: -1 for cpu, else the CUDA device index of the one GPU the flags choose
// (one_gpu_device). Throws InvalidArgument when they ask for several, or for cuda in a build
// without CUDA.
int cuda_device_index(const EngineFlags& f);

// With --device cuda[:N]: a CUDA stage (all layers) of the CPU model's file on that GPU, to run
// instead of cpu.stage() (the CPU model still provides the file, config and tokenizer). Null
// for --device cpu.
std::unique_ptr<Stage> open_gpu_stage(const CpuModel& cpu, const EngineFlags& f, int n_ctx, int n_slots = 1);

// Replaces the "Usage:" line CLI11 derives from the options, for a command whose positional
// arguments CLI11 cannot describe (quantize's `IN [OUT] TYPE [NTHREADS]`).
void set_usage(CLI::App& app, const std::string& usage);

// Whitespace-separated token ids; throws InvalidArgument (missing file, not a number).
std::vector<int32_t> read_ids_file(const std::string& path);

}  // namespace pipellm::cli

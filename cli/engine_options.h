// Flags shared by the engine commands (generate, eval, bench): model path, threads, context,
// KV cache type, device; plus value parsing that reports bad values as usage errors (exit 2).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/cpu/cpu_model.h"
#include "engine/model/stage.h"

namespace pipellm::cli {

struct EngineFlags {
  std::string model;          // empty: the default model
  int threads = 0;            // 0: one per hardware thread
  int ctx = 0;                // 0: the command's default
  TensorType kv_type = TensorType::F16;
  std::optional<TensorType> kv_type_k, kv_type_v;  // -ctk / -ctv: one side's type (overrides --kv-type)
  std::string device = "cpu";
  bool graphs = true;         // CUDA: decode steps as CUDA graphs (--no-graphs: eager launches)
  uint64_t vram_budget = 0;   // CUDA: bytes of GPU memory for weights + KV + staging; 0: no limit
};

// Help text for the shared flags.
const char* engine_flags_help();

// If argv[i] is a shared flag, consumes it (and its value, advancing i) and returns true.
// Throws InvalidArgument for a bad value.
bool parse_engine_flag(int argc, char** argv, int& i, EngineFlags& f);

// The model shipped with the repository: <exe dir>/../share/pipellm/models/default.gguf (installed),
// <exe dir>/../../models/default.gguf (the repository, from <repo>/<build>/cli), or
// <exe dir>/../models/default.gguf; failing those, for a binary in its build tree only,
// <source dir>/models/default.gguf (compile definitions PIPELLM_DEFAULT_MODEL, PIPELLM_BUILD_DIR).
std::string default_model_path();

// The model to open (flag or default); throws InvalidArgument when the file does not exist.
std::string resolve_model(const EngineFlags& f);

// Opens the model on the requested device (CPU only for now) with n_ctx positions.
std::unique_ptr<CpuModel> open_model(const std::string& path, const EngineFlags& f, int n_ctx, int n_slots = 1);

// --device: -1 for cpu, else the CUDA device index of cuda[:N]. Throws InvalidArgument for
// another value, or for cuda in a build without CUDA.
int cuda_device_index(const EngineFlags& f);

// With --device cuda[:N]: a CUDA stage (all layers) of the CPU model's file on that GPU, to run
// instead of cpu.stage() (the CPU model still provides the file, config and tokenizer). Null
// for --device cpu.
std::unique_ptr<Stage> open_gpu_stage(const CpuModel& cpu, const EngineFlags& f, int n_ctx, int n_slots = 1);

// The value after a flag, or InvalidArgument "FLAG needs a value".
std::string flag_value(int argc, char** argv, int& i);
int parse_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi);
uint64_t parse_u64(const std::string& flag, const std::string& v);
float parse_float(const std::string& flag, const std::string& v, float lo, float hi);

// Whitespace-separated token ids; throws InvalidArgument (missing file, not a number).
std::vector<int32_t> read_ids_file(const std::string& path);

}  // namespace pipellm::cli

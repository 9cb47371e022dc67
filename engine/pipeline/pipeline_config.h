// The stage configuration (`pipellm-stage --config X.yaml`, `pipellm plan --config X.yaml`).
//
// Every key is optional except `model` and `stages`; unknown keys and bad values are errors
// (ConfigError) naming the file, the key and its line. Relative paths (model) resolve against
// the config file's directory. configs/*.yaml show every key with a comment.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/tensor_type.h"
#include "engine/model/expert_placement.h"

namespace pipellm {

class ConfigError : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

enum class TransportKind { Auto, Nccl, Ipc, Mpi };
const char* transport_name(TransportKind t);

// KV cache element types (engine/model/kv_cache.h); the names are llama.cpp's --cache-type-k/-v values.
enum class KvType { F16, F32, Q8_0, Q4_0 };
const char* kv_type_name(KvType t);  // "f16", "f32", "q8_0", "q4_0"
TensorType kv_tensor_type(KvType t);
KvType kv_type_of(TensorType t);  // throws InvalidArgument for a type the KV cache does not take

// One pipeline stage = one MPI rank.
struct StageSpec {
  std::string device = "cpu";  // "cpu" or "cuda:N"
  int device_index = -1;       // N of cuda:N; -1 for cpu
  uint64_t memory_bytes = 0;   // budget for weights + KV cache + scratch; 0: unlimited
  uint64_t vram_budget = 0;    // GPU stages: weights beyond it stream from host (docs/PREFETCH.md)
  // GPU stages: routed experts kept in host memory, multiplied by the rank's CPU (keys cpu_moe,
  // n_cpu_moe, override_tensor: llama.cpp's --cpu-moe, --n-cpu-moe, -ot; engine/model/expert_placement.h),
  // and the VRAM of the cache of the most used of them (expert_cache: a size).
  ExpertPlacementFlags experts;
  // GPU stages with streamed layers: the share of each streamed matrix's rows the rank's CPU
  // multiplies in decode (key cpu_rows: a number, or auto; engine/cuda/host_rows.h). -1: auto.
  double cpu_rows = 0.0;
  std::string host;            // informative (multi-node): the hostfile places ranks
  std::optional<std::pair<int, int>> layers;  // explicit [first, last)
  int line = 0;                // line of this entry in the file (for messages)
  bool is_gpu() const { return device_index >= 0; }
};

struct PrefetchConfig {
  bool enabled = false;
  int staging_buffers = 2;
  uint64_t buffer_bytes = 256ull << 20;
};

struct PipelineConfig {
  std::string source = "<string>";  // file name, for messages
  std::string model;                // resolved path
  int context_length = 2048;        // positions per sequence (KV slot)
  int max_sequences = 4;            // KV slots
  int micro_batches = 2;            // in flight at once
  int max_batch_tokens = 512;       // tokens per micro-batch
  int prefill_chunk = 256;          // prompt tokens of one sequence per micro-batch
  // kv_cache_type sets K and V; kv_cache_type_k / kv_cache_type_v (default: kv_cache_type) are
  // what the stages use, each side on its own (llama.cpp's -ctk / -ctv).
  KvType kv_cache_type = KvType::F16;
  KvType kv_cache_type_k = KvType::F16;
  KvType kv_cache_type_v = KvType::F16;
  int threads = 0;                  // CPU threads per rank (0: all)
  uint64_t scratch_bytes = 256ull << 20;  // per-stage activations/workspace reserve (planner)
  TransportKind transport = TransportKind::Auto;
  std::string coordinator;          // host:port; empty: the head writes to stdout
  PrefetchConfig prefetch;
  std::vector<StageSpec> stages;

  int n_stages() const { return static_cast<int>(stages.size()); }
  bool has_explicit_layers() const;

  // The config as YAML that parse() reads back to an equal config (with `model` absolute, from
  // any directory): the coordinator writes the GPU pipeline it makes up (gpu_split.h).
  std::string to_yaml() const;

  static PipelineConfig load(const std::string& path);
  // `base_dir` resolves relative paths; `name` appears in messages.
  static PipelineConfig parse(const std::string& yaml_text, const std::string& name, const std::string& base_dir);
};

}  // namespace pipellm

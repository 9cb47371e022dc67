// llama.cpp's multi-GPU flags on the pipeline. llama.cpp splits a model over the GPUs it sees
// (`-sm layer`, its default): each GPU holds a contiguous range of layers. Here that is a pipeline
// with one pipellm-stage rank per GPU (activations over NCCL), launched by the coordinator from a
// config it writes itself (gpu_pipeline_config), so `pipellm-coordinator -m M -ngl 99` on a
// two-GPU machine runs as a llama.cpp user expects without a YAML file.
//
//   -dev/--device   cpu | none | cuda | cuda:N | a list: cuda:0,cuda:1 (llama.cpp's CUDA0,CUDA1)
//   -sm/--split-mode none (one GPU: -mg) | layer (every listed GPU) | row (refused: rows of a
//                   matrix split over GPUs is tensor parallelism, which this engine does not do)
//   -ts/--tensor-split  shares of layers per GPU (3,1 or 3/1), llama.cpp's assignment
//   -mg/--main-gpu  the GPU of -sm none (an index into the listed GPUs, as llama.cpp's)
// Left to choose (no -sm, no -ts, one unlisted `cuda`): one GPU when the model fits it (no
// transfers between GPUs, the fastest for one stream), else the pipeline over all visible GPUs.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/model/expert_placement.h"
#include "engine/pipeline/pipeline_config.h"

namespace pipellm {

enum class SplitMode { Auto, None, Layer };

// What a model may plan to use of a GPU's memory: 95% (the CUDA context and the driver keep the rest).
inline uint64_t usable_gpu_bytes(uint64_t total) { return total / 20 * 19; }

// "none" | "layer"; "row" and anything else throw InvalidArgument naming the value.
SplitMode parse_split_mode(const std::string& v);

// The devices of --device in this engine's spelling: "cpu" (also llama.cpp's "none"), "cuda",
// "cuda:N", or GPUs joined by commas ("cuda:0,cuda:1"); llama.cpp's CUDA0 is cuda:0. Throws
// InvalidArgument naming the value for anything else or a GPU listed twice.
std::string normalize_device(const std::string& v);
// The GPUs a normalized device names: {} for "cpu" and for "cuda" (left to choose), else the list.
std::vector<int> listed_gpus(const std::string& device);

// "3,1" or "3/1": non-negative shares, at least one positive. Throws InvalidArgument.
std::vector<double> parse_tensor_split(const std::string& v);

// llama.cpp's layer assignment for shares s_0..s_{n-1}: with c_d the cumulative share of GPUs
// 0..d over the total, layer i goes to the first GPU d with c_d > i / (n_layer + 1) (the output
// counts as one more layer, which the last GPU holds). Returns [first, last) per GPU, empty
// (first == last) for a GPU left without layers.
std::vector<std::pair<int, int>> layers_by_share(int n_layer, const std::vector<double>& shares);

struct GpuPlacementRequest {
  std::vector<int> listed;          // listed_gpus(--device); empty: left to choose
  SplitMode mode = SplitMode::Auto;
  std::vector<double> tensor_split;  // -ts; empty: not given
  std::optional<int> main_gpu;       // -mg
  int visible_gpus = 0;              // GPUs this machine shows (plan_check.h visible_gpu_count)
  std::vector<uint64_t> gpu_bytes;   // each visible GPU's memory; empty: unknown
  uint64_t model_bytes = 0;          // the whole model on one GPU: weights, KV cache, scratch
};

struct GpuPlacement {
  std::vector<int> gpus;            // one: the in-process engine on it; several: a stage each
  std::vector<std::pair<int, int>> layers;  // per GPU from -ts; empty: the planner chooses
  std::string reason;               // one line for the log
  bool pipeline() const { return gpus.size() > 1; }
};

// Throws InvalidArgument naming the flag: -mg or -ts beyond the GPUs, -ts leaving every GPU
// without layers, a listed GPU the machine does not show.
GpuPlacement place_on_gpus(const GpuPlacementRequest& r, int n_layer);

// For a program that runs on one GPU (pipellm generate, eval, bench): "cpu", or the one GPU the
// flags choose as "cuda:N" (gpu_bytes unknown, so a free choice is cuda:0 or -mg's). Throws
// InvalidArgument naming `program` when they ask for several (a list, -sm layer over several
// visible GPUs, -ts sharing layers), pointing to pipellm-coordinator. `n_layer`: the model's, or
// any count at least as large before the file is read.
std::string one_gpu_device(const std::string& device, GpuPlacementRequest r, int n_layer, const std::string& program);

// What the in-process engine would have run with, for the stages of a GPU pipeline.
struct GpuPipelineSettings {
  std::string model;                // made absolute: the config lives in a temporary directory
  int n_ctx = 4096;
  int n_slots = 4;
  // n_slots is only the default (-np not given): on one GPU fewer may run, so that the model stays
  // resident rather than streaming layers (coordinator/served_gpus.h).
  bool fit_slots = false;
  int threads = 0;
  int max_batch_tokens = 512;
  KvType kv_type_k = KvType::F16, kv_type_v = KvType::F16;
  ExpertPlacementFlags experts;     // every stage gets them (layer numbers are the model's)
  double cpu_rows = 0.0;
};

// One stage per placed GPU (cuda:N), explicit layers when -ts gave them, one micro-batch per
// stage, NCCL between them (transport auto). Without -ts the stages' budgets are the GPUs'
// memory (gpu_bytes, 95%: the CUDA context and the driver keep the rest) when known.
PipelineConfig gpu_pipeline_config(const GpuPipelineSettings& s, const GpuPlacement& p,
                                   const std::vector<uint64_t>& gpu_bytes);

}  // namespace pipellm

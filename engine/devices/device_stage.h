// Whole-model stages on a named device ("cpu", "cuda", "cuda:N"): the one place outside the
// stage worker that knows which backends this build has. `pipellm generate|eval|bench` and the
// coordinator's in-process head open their GPU stage here (library pipellm_devices, which links
// the CUDA engine when it is built).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/model/expert_placement.h"
#include "engine/model/model_config.h"
#include "engine/model/stage.h"

namespace pipellm {

struct DeviceStageOptions {
  std::string device = "cpu";
  int n_ctx = 2048;
  int n_slots = 1;
  int max_batch_tokens = 512;  // tokens per step (prefill chunk)
  bool graphs = true;          // CUDA: decode steps as CUDA graphs (false: the eager ablation)
  uint64_t vram_budget = 0;    // CUDA: bytes for weights + KV + staging; 0: everything resident
  int gpu_layers = -1;         // CUDA (-ngl N): at most N layers resident, the rest streamed; -1: all
  TensorType kv_type_k = TensorType::F16;  // KV cache element types (f16, q8_0, q4_0)
  TensorType kv_type_v = TensorType::F16;
  // CUDA: routed experts kept in host memory and multiplied by the CPU (--cpu-moe, --n-cpu-moe,
  // -ot), with host_threads threads (0: one per hardware thread).
  ExpertPlacementFlags experts;
  int host_threads = 0;
  double cpu_rows = 0.0;  // CUDA: share of streamed matrices' rows the CPU multiplies in decode (host_rows.h)
  // CUDA: the auto-fit decision and the stage's device memory block (engine/cuda/stage_fit.h),
  // one message each; null: silent.
  std::function<void(const std::string&)> log;
  std::string override_hint = "--vram-budget or -ngl";  // the flags the auto-fit line names
};

// -1 for "cpu", N for "cuda" (0) or "cuda:N". Throws InvalidArgument for anything else, or for
// cuda in a build without CUDA. `what` names the flag in the message.
int cuda_device_index(const std::string& device, const std::string& what = "--device");

// Each visible GPU's memory in bytes, in CUDA's numbering (device properties only: no context is
// made on any GPU); empty in a build without CUDA or where the driver answers nothing.
std::vector<uint64_t> cuda_memory_bytes();

// A CUDA stage holding every layer of the file on opt.device; null for "cpu" (the caller runs
// its CPU stage). Without vram_budget and gpu_layers, layers that do not fit the device's free
// memory are streamed (auto-fit). Throws InvalidArgument for a bad device or when not even the KV
// cache and scratch fit (the sizes named) or for an expert placement the file's tensors do not
// allow, Error when the GPU cannot hold it.
std::unique_ptr<Stage> open_cuda_stage(const GgufFile& file, const ModelConfig& c, const DeviceStageOptions& opt);

}  // namespace pipellm

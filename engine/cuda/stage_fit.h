// A CUDA stage that fits its device: the one place `pipellm generate|eval` and the in-process
// coordinator (engine/devices/device_stage.h) and pipellm-stage (stage_worker/stage_factory.cpp)
// build their CUDA stages. With no VRAM budget and no -ngl, a stage that would not fit the
// device's free memory streams the layers that do not (engine/model/vram_fit.h decides); the
// decision and the stage's memory block (device_memory.h) go to the caller's log.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "engine/cuda/cuda_stage.h"
#include "engine/model/vram_fit.h"

namespace pipellm::cuda {

struct StageFitOptions {
  int gpu_layers = -1;  // -ngl N: at most N of the stage's layers resident, the rest streamed; -1: all
  std::string override_hint = "--vram-budget or -ngl";  // named in the auto-fit line
  std::string reduce_hint;  // named when nothing fits; empty: the CLI flags (VramFitInput's default)
  std::function<void(const std::string&)> log;  // the auto-fit line and the memory block; null: silent
};

// Device bytes CudaStage's constructor allocates besides the weights, KV cache and recurrent
// state (DeviceMemoryReport::scratch_bytes: activations, step inputs, sampling state, attention
// partials, cuBLAS workspace, dequantization buffer), from the sizes alone. `sms`: the device's
// multiprocessors (the attention split). Mirrors the constructor; a GPU test holds them equal.
uint64_t estimate_scratch_bytes(const ModelConfig& c, const ModelWeights& w, bool last, const CudaStageOptions& opt,
                                int sms);

// Measures opt.device's free memory, decides (fit_vram) and applies the decision to
// opt.streaming, or to opt.host_experts when the routed experts of the first layers must stay in
// host memory (unless opt.host_experts already places some). Throws InvalidArgument when the stage cannot fit (the sizes named).
VramFit fit_stage_options(const ModelConfig& c, const ModelWeights& w, CudaStageOptions& opt, bool last,
                          const StageFitOptions& fit);

// fit_stage_options, then the stage; logs the decision (when one was made or a warning is due)
// before the upload and the memory block after it.
std::unique_ptr<CudaStage> open_fitted_stage(const ModelConfig& c, const ModelWeights& w, bool first, bool last,
                                             CudaStageOptions opt, const StageFitOptions& fit);

}  // namespace pipellm::cuda

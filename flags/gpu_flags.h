// llama.cpp's multi-GPU flags (engine/pipeline/gpu_split.h): -sm/--split-mode, -ts/--tensor-split,
// -mg/--main-gpu, and GPU lists in --device (-dev CUDA0,CUDA1). Library pipellm_flags_engine.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "engine/pipeline/gpu_split.h"

namespace CLI {
class App;
}  // namespace CLI

namespace pipellm::flags {

struct GpuSplitFlags {
  SplitMode split_mode = SplitMode::Auto;
  std::vector<double> tensor_split;  // empty: not given
  std::optional<int> main_gpu;
};

// Adds -sm, -ts and -mg, and makes the program's --device (added before, by add_model_flags)
// take GPU lists and llama.cpp's device names, normalized (normalize_device). A bad value is a
// usage error naming the flag.
void add_gpu_split_flags(CLI::App& app, GpuSplitFlags& f);

// The request place_on_gpus / one_gpu_device take, with this machine's visible GPU count.
GpuPlacementRequest placement_request(const std::string& device, const GpuSplitFlags& f);

}  // namespace pipellm::flags

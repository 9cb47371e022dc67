// Where `pipellm-coordinator -m M --device cuda...` runs the model: on one GPU in-process, or,
// when the flags or the model's size call for several (engine/pipeline/gpu_split.h), as a
// pipeline of one pipellm-stage rank per GPU under mpirun, from a config written here. The
// config is the one a user would write by hand (configs/dual4090.yaml); it is logged, and lives
// in a temporary file as long as the coordinator (restarts relaunch from it).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"
#include "engine/pipeline/gpu_split.h"
#include "engine/pipeline/pipeline_config.h"
#include "engine/util/temp_file.h"

namespace pipellm::coord {

struct ServedGpus {
  std::string device;                      // one GPU: "cuda:N" for the in-process engine
  int n_slots = 0;                         // one GPU with s.fit_slots: the sequences it runs at once
  std::optional<PipelineConfig> config;    // several: their pipeline ...
  std::unique_ptr<TempFile> config_file;   // ... as the stages read it
  std::string reason;                      // the choice, for the log
};

// The model's need on one GPU (weights not left on the host by s.experts, the KV cache of
// s.n_ctx x s.n_slots, the planner's scratch reserve) decides a free choice (req.gpu_bytes). On
// one GPU with s.fit_slots, the most of n_slots, 2 and 1 sequences whose KV caches let the model
// fit 95% of its memory (llama-server's default holds 4096 positions in all; 4 slots of 4096 here
// would stream a 32B model's layers on a 24 GB card), else 1.
// Throws InvalidArgument for flags that cannot be placed (gpu_split.h) or a model the engine
// cannot run.
ServedGpus place_served_model(const GgufFile& model, const ModelConfig& mc, const GpuPlacementRequest& req,
                              const GpuPipelineSettings& s);

}  // namespace pipellm::coord

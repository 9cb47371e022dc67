// What stays in host memory when a model does not fit the GPU, for pipellm and pipellm-coordinator:
// llama.cpp's expert placement flags (--cpu-moe/-cmoe, --n-cpu-moe/-ncmoe N, -ot/--override-tensor
// PATTERN=BUFFER, repeatable) into the engine's ExpertPlacementFlags (engine/model/
// expert_placement.h), PipeLLM's --expert-cache, and --cpu-rows (engine/cuda/host_rows.h).
// Library pipellm_flags_engine.
#pragma once
#include "engine/model/expert_placement.h"

namespace CLI {
class App;
}  // namespace CLI

namespace pipellm::flags {

// A malformed -ot entry is a usage error naming it.
void add_expert_flags(CLI::App& app, ExpertPlacementFlags& f);
// --cpu-rows F|auto: with layers streamed (-ngl N, --vram-budget, auto-fit), the share of each
// streamed matrix's rows the CPU multiplies in decode (0 .. 0.95; auto: -1, measured at load).
void add_cpu_rows_flag(CLI::App& app, double& cpu_rows);

}  // namespace pipellm::flags

// Auto-fit (the "VRAM parity" issue): with neither a VRAM budget nor -ngl given, a stage whose
// weights, KV cache and scratch do not fit the device's free memory gets a budget that does, and
// the weight streamer (docs/PREFETCH.md) carries the layers left out. Pure (sizes in, plan out):
// the CUDA side (engine/cuda/stage_fit.h) measures the device and applies the result.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/vram_plan.h"

namespace pipellm {

struct VramFitInput {
  // The stage's sizes as the planner sees them (vram_plan_input); its budget and min_streamed
  // are ignored: the user's choices are the fields below.
  VramPlanInput sizes;
  uint64_t scratch_bytes = 0;  // on the device whatever streams: activations, workspaces, dequantization buffer
  uint64_t free_bytes = 0;     // the device's free memory before the stage is built
  uint64_t margin_bytes = 0;   // left free (CUDA graphs, transports, allocator slack): fit_margin()
  uint64_t user_budget = 0;    // --vram-budget / a stage's vram_budget; 0: none given
  int gpu_layers = -1;         // -ngl N: at most N layers resident; -1: none given
  int min_streamed = 0;        // streamed layers asked for directly (tests, ablations); counts as a choice
  bool layers_streamable = true;  // false when a layer cannot stream (expert stacks, not yet supported)
  // Per layer: bytes of its routed expert stacks, which may stay in host memory (the CPU multiplies
  // them: engine/model/expert_placement.h) when the stage does not fit; empty when the user placed
  // the experts (--cpu-moe, --n-cpu-moe, -ot) or the model has none.
  std::vector<uint64_t> expert_bytes;
  uint64_t expert_slot_bytes = 0;  // device memory the host experts need once any stay on the host
  // Named in messages: how to override the auto-fit, and what to reduce when nothing fits.
  std::string override_hint = "--vram-budget or -ngl";
  std::string reduce_hint = "the context (-c), the parallel sequences (-np) or the KV cache types (-ctk/-ctv q8_0)";
};

enum class VramFitMode {
  Resident,      // everything fits: no streaming
  AutoStreamed,  // no choice given and it did not fit: the chosen budget streams some layers
  UserChoice,    // a budget, -ngl or min_streamed was given: taken as is
};

struct VramFit {
  VramFitMode mode = VramFitMode::Resident;
  uint64_t budget = 0;   // for StreamingOptions::vram_budget (weights + ring + KV, as --vram-budget); 0: none
  int min_streamed = 0;  // for StreamingOptions::min_streamed_layers
  VramPlan plan;         // the placement these options lead to
  uint64_t needed_bytes = 0;  // plan.device_bytes + scratch: what the stage will hold
  uint64_t usable_bytes = 0;  // free - margin
  int host_expert_layers = 0;  // auto-fit: the routed experts of layers 0 .. N-1 stay in host memory
  // ... and the VRAM left over keeps the most used of them (expert_cache.h), up to all of them
  uint64_t expert_cache_bytes = 0;
  // The auto-fit line, or a warning when the user's choice will not fit; empty when all fits.
  std::string message;
};

// What auto-fit leaves free: 512 MiB or 2% of the free memory, whichever is more. Graphs,
// transport buffers and allocator granularity are not in the stage's own figures; a larger
// fraction would strand gigabytes on large cards.
uint64_t fit_margin(uint64_t free_bytes);

// Decides as described above; a stage with experts that does not fit keeps the routed experts of
// its first layers in host memory (as llama.cpp's --n-cpu-moe N, the fewest layers that fit; MoE
// layers do not stream). Throws InvalidArgument when not even the parts that cannot stream
// (KV cache, scratch, staging ring, output head, norms, tied embeddings) fit, or when layers
// must stream but cannot: the message names what is needed, what is free, and what to reduce.
VramFit fit_vram(const VramFitInput& in);

}  // namespace pipellm

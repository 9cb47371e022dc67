// Where a mixture-of-experts model's routed expert stacks live, as llama.cpp users say it:
// --cpu-moe, --n-cpu-moe N and -ot/--override-tensor REGEX=BUFFER. Experts left in host memory
// are multiplied by the CPU beside a GPU stage that holds everything else (attention, router,
// shared experts, norms): a model whose experts do not fit the card still decodes at host-memory
// speed for the few experts each token uses (engine/cpu/routed_experts.h does the products).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/model/model_config.h"

namespace pipellm {

// One -ot entry: tensors whose full GGUF name ("blk.3.ffn_up_exps.weight") contains a match of
// `pattern` (std::regex_search, ECMAScript: as llama.cpp) go to host memory (`host`) or stay on
// the stage's GPU.
struct TensorOverride {
  std::string pattern;
  bool host = false;
  std::string text;  // "PATTERN=BUFFER" as given, for messages
};

struct ExpertPlacementFlags {
  std::vector<TensorOverride> overrides;  // -ot, in the order given: the first match decides
  bool cpu_moe = false;                   // --cpu-moe: the experts of every layer
  int n_cpu_moe = 0;                      // --n-cpu-moe N: the experts of layers 0 .. N-1
  uint64_t cache_bytes = 0;               // --expert-cache SIZE: VRAM for the most used host experts
  bool any() const { return !overrides.empty() || cpu_moe || n_cpu_moe > 0; }
};

// "PATTERN=BUFFER[,PATTERN=BUFFER...]" (one -ot value). BUFFER: CPU (host memory), or CUDA<n> /
// GPU (the stage's device; named to keep some tensors there ahead of a later CPU pattern), any
// case. Throws InvalidArgument naming the entry: no '=', an empty pattern, an invalid regular
// expression, another buffer name.
std::vector<TensorOverride> parse_tensor_overrides(const std::string& value);

// Per global layer: whether its routed expert stacks (and their biases and scales) stay in host
// memory. The -ot overrides are tried first, then --n-cpu-moe and --cpu-moe (llama.cpp appends
// those to the same list). Throws InvalidArgument when a CPU override matches a tensor other
// than a routed expert stack (only those are computed on the CPU here), or would put one expert
// stack of a layer on the CPU and another on the GPU; both messages name the tensor and pattern.
std::vector<bool> host_expert_layers(const ModelConfig& c, const ExpertPlacementFlags& f);

// The share of each streamed matrix's rows the CPU takes in decode (--cpu-rows, a config's
// cpu_rows; engine/cuda/host_rows.h) from its text: a number in [0, 0.95], or "auto" (-1: measured
// at load). nullopt for anything else.
std::optional<double> parse_cpu_rows_share(const std::string& text);

// "experts of layers 0-23, 30 in host memory" for logs; "" when none.
std::string describe_host_experts(const std::vector<bool>& layers);

}  // namespace pipellm

// Every tensor a model of a given shape has, with the type llama-quantize would give it: the
// per-layer tensors come from the architecture's recipe (ModelConfig::layer_tensors), so the
// generator, the benchmarks and the loader agree on one list per architecture.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/model_config.h"
#include "engine/model_gen/model_shape.h"
#include "engine/model_gen/quant_mix.h"

namespace pipellm {

struct PlannedTensor {
  std::string name;
  TensorType type;
  std::vector<int64_t> ne;
  uint64_t nbytes() const;
};

struct ModelPlan {
  ModelConfig config;                  // what ModelConfig::from_gguf will read from the file
  std::vector<PlannedTensor> tensors;  // file order: token_embd, per-layer inputs, rope_freqs, blk.0.., output_norm, output
};

// Throws InvalidArgument / FormatError naming the architecture when the shape is unusable.
ModelPlan plan_model(const ModelShape& shape, const FileType& ft);
std::vector<PlannedTensor> plan_model_tensors(const ModelShape& shape, const FileType& ft);
uint64_t planned_bytes(const std::vector<PlannedTensor>& tensors);

}  // namespace pipellm

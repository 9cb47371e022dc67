// Which tensor type each tensor of a model gets for a file type such as Q4_K_M, following
// llama.cpp's llama-quantize rules so file sizes match llama.cpp's files of the same shape.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/model_gen/model_shape.h"
#include "kernels/cpu/tensor_type.h"

namespace pipellm {

struct FileType {
  std::string name;     // "Q4_K_M"
  uint32_t gguf_id;     // general.file_type (llama_ftype)
  TensorType base;      // type of most matrices
};

// F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K, MXFP4_MOE (case-insensitive); nullopt otherwise.
std::optional<FileType> file_type_from_name(const std::string& name);
std::vector<std::string> file_type_names();

struct PlannedTensor {
  std::string name;
  TensorType type;
  std::vector<int64_t> ne;
  uint64_t nbytes() const;
};

// The type llama-quantize gives the tensor `name` of shape `ne` under `ft`, in a model of
// `n_layer` layers with (`has_output`) or without (tied) a separate output.weight.
TensorType choose_tensor_type(const std::string& name, const std::vector<int64_t>& ne, int n_layer,
                              const FileType& ft, bool has_output);

// Every tensor of a model of this shape, in file order, with its type under `ft`.
std::vector<PlannedTensor> plan_model_tensors(const ModelShape& shape, const FileType& ft);
uint64_t planned_bytes(const std::vector<PlannedTensor>& tensors);

}  // namespace pipellm

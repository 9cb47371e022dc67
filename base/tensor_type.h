// GGML tensor types as stored in GGUF files: ids, block geometry, names, and which backend reads
// which type (one table; a type without support is refused by name wherever it is used).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace pipellm {

// Numeric ids are the on-disk values of ggml_type; never renumber.
enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

struct TensorTypeInfo {
  const char* name;
  int64_t block_size;   // elements per block
  size_t block_bytes;   // bytes per block
  bool can_dequantize;  // PipeLLM has a CPU dequantizer (and products) for it
  bool cuda;            // the CUDA kernels read it (kernels/cuda/weight_layout.h)
};

// nullopt for an id that is not a known ggml type.
std::optional<TensorTypeInfo> tensor_type_info(uint32_t id);
const TensorTypeInfo& tensor_type_info(TensorType type);  // type must be known
const char* tensor_type_name(TensorType type);
std::optional<TensorType> tensor_type_from_name(const std::string& name);  // "Q4_K", "f16", ...

// Bytes of a row of n elements; n must be a multiple of the block size.
size_t tensor_row_bytes(TensorType type, int64_t n);

}  // namespace pipellm

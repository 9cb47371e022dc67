#include "base/tensor_type.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "base/error.h"

namespace pipellm {
namespace {

struct Entry {
  TensorType type;
  TensorTypeInfo info;
};

// Block geometry from the formats' definitions (ggml-common.h layouts), and which backends read
// each type: the one table every backend's type check consults.
constexpr std::array<Entry, 32> kTypes = {{
    {TensorType::F32, {"F32", 1, 4, true, true}},
    {TensorType::F16, {"F16", 1, 2, true, true}},
    {TensorType::Q4_0, {"Q4_0", 32, 18, true, true}},
    {TensorType::Q4_1, {"Q4_1", 32, 20, true, true}},
    {TensorType::Q5_0, {"Q5_0", 32, 22, true, true}},
    {TensorType::Q5_1, {"Q5_1", 32, 24, true, true}},
    {TensorType::Q8_0, {"Q8_0", 32, 34, true, true}},
    {TensorType::Q8_1, {"Q8_1", 32, 36, false, false}},
    {TensorType::Q2_K, {"Q2_K", 256, 84, true, true}},
    {TensorType::Q3_K, {"Q3_K", 256, 110, true, true}},
    {TensorType::Q4_K, {"Q4_K", 256, 144, true, true}},
    {TensorType::Q5_K, {"Q5_K", 256, 176, true, true}},
    {TensorType::Q6_K, {"Q6_K", 256, 210, true, true}},
    {TensorType::Q8_K, {"Q8_K", 256, 292, false, false}},
    {TensorType::IQ2_XXS, {"IQ2_XXS", 256, 66, false, false}},
    {TensorType::IQ2_XS, {"IQ2_XS", 256, 74, false, false}},
    {TensorType::IQ3_XXS, {"IQ3_XXS", 256, 98, false, false}},
    {TensorType::IQ1_S, {"IQ1_S", 256, 50, false, false}},
    {TensorType::IQ4_NL, {"IQ4_NL", 32, 18, true, true}},
    {TensorType::IQ3_S, {"IQ3_S", 256, 110, false, false}},
    {TensorType::IQ2_S, {"IQ2_S", 256, 82, false, false}},
    {TensorType::IQ4_XS, {"IQ4_XS", 256, 136, true, true}},
    {TensorType::I8, {"I8", 1, 1, false, false}},
    {TensorType::I16, {"I16", 1, 2, false, false}},
    {TensorType::I32, {"I32", 1, 4, false, false}},
    {TensorType::I64, {"I64", 1, 8, false, false}},
    {TensorType::F64, {"F64", 1, 8, false, false}},
    {TensorType::IQ1_M, {"IQ1_M", 256, 56, false, false}},
    {TensorType::BF16, {"BF16", 1, 2, true, true}},
    {TensorType::TQ1_0, {"TQ1_0", 256, 54, false, false}},
    {TensorType::TQ2_0, {"TQ2_0", 256, 66, false, false}},
    {TensorType::MXFP4, {"MXFP4", 32, 17, true, true}},
}};

}  // namespace

std::optional<TensorTypeInfo> tensor_type_info(uint32_t id) {
  for (const auto& e : kTypes)
    if (static_cast<uint32_t>(e.type) == id) return e.info;
  return std::nullopt;
}

const TensorTypeInfo& tensor_type_info(TensorType type) {
  for (const auto& e : kTypes)
    if (e.type == type) return e.info;
  throw Error("unknown tensor type id " + std::to_string(static_cast<uint32_t>(type)));
}

const char* tensor_type_name(TensorType type) { return tensor_type_info(type).name; }

std::optional<TensorType> tensor_type_from_name(const std::string& name) {
  std::string upper = name;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  for (const auto& e : kTypes)
    if (upper == e.info.name) return e.type;
  return std::nullopt;
}

size_t tensor_row_bytes(TensorType type, int64_t n) {
  const auto& info = tensor_type_info(type);
  if (n < 0 || n % info.block_size != 0)
    throw Error(std::string("row of ") + std::to_string(n) + " elements is not a whole number of " +
                info.name + " blocks (" + std::to_string(info.block_size) + ")");
  return static_cast<size_t>(n / info.block_size) * info.block_bytes;
}

}  // namespace pipellm

// Random rows of any tensor type for the dot-product tests (vec_dot_test, vec_dot_q8_test).
#pragma once
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "base/tensor_type.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/quantize.h"

namespace pipellm::test {

// Byte offsets of the fp16 scales inside each block, so random blocks get sane scales
// (random bits there would give inf/NaN or 1e4-sized values).
inline std::vector<size_t> fp16_offsets(TensorType t) {
  switch (t) {
    case TensorType::Q4_0: case TensorType::Q5_0: case TensorType::Q8_0: case TensorType::IQ4_NL:
    case TensorType::IQ4_XS: return {0};
    case TensorType::Q4_1: case TensorType::Q5_1: case TensorType::Q4_K: case TensorType::Q5_K: return {0, 2};
    case TensorType::Q2_K: return {80, 82};
    case TensorType::Q3_K: return {108};
    case TensorType::Q6_K: return {208};
    default: return {};
  }
}

// A row of n elements of type t: quantized Gaussian data where a quantizer exists (which
// exercises realistic scales), random bytes with fp16 scales in [0.001, 0.01) otherwise
// (which exercises every bit pattern of the quants, extreme scales and mins included).
inline std::vector<uint8_t> random_row(TensorType t, int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> row(tensor_row_bytes(t, n));
  std::normal_distribution<float> gauss;
  if (can_quantize(t) && (rng() & 1)) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = gauss(rng);
    quantize_row(t, x.data(), row.data(), n);
    return row;
  }
  if (t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = gauss(rng);
      if (t == TensorType::F32) std::memcpy(row.data() + 4 * i, &v, 4);
      const uint16_t h = t == TensorType::F16 ? f32_to_fp16(v) : f32_to_bf16(v);
      if (t != TensorType::F32) std::memcpy(row.data() + 2 * i, &h, 2);
    }
    return row;
  }
  for (auto& byte : row) byte = static_cast<uint8_t>(rng());
  const auto& info = tensor_type_info(t);
  std::uniform_real_distribution<float> scale(0.001f, 0.01f);
  for (size_t b = 0; b < row.size() / info.block_bytes; ++b)
    for (size_t off : fp16_offsets(t)) {
      const uint16_t h = f32_to_fp16(scale(rng));
      std::memcpy(row.data() + b * info.block_bytes + off, &h, 2);
    }
  return row;
}

}  // namespace pipellm::test

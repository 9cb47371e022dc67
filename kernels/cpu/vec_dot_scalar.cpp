// Portable dot-product kernels: decode one block into a small stack buffer with the format's
// dequantizer, then accumulate its products in 8 lanes (vectorisable without reassociation).
// The fallback where AVX2 is missing, and the reference the AVX2 kernels are tested against.
#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/dequantize_formats.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/vec_dot_kernels.h"

namespace pipellm::detail {
namespace {

constexpr int kLanes = 8;

using BlockDecoder = void (*)(const void* src, float* dst, int64_t n_blocks);

// Adds the products of len (a multiple of kLanes) elements into the lane sums.
inline void accumulate(const float* a, const float* b, int len, float* lanes) {
  for (int i = 0; i < len; i += kLanes)
    for (int k = 0; k < kLanes; ++k) lanes[k] += a[i + k] * b[i + k];
}

inline float lane_total(const float* lanes) {
  float s = 0;
  for (int k = 0; k < kLanes; ++k) s += lanes[k];
  return s;
}

template <BlockDecoder Decode, int BlockSize, size_t BlockBytes>
float dot_blocks(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  float buf[BlockSize];
  float lanes[kLanes] = {};
  for (int64_t i = 0; i < n; i += BlockSize, p += BlockBytes) {
    Decode(p, buf, 1);
    accumulate(buf, x + i, BlockSize, lanes);
  }
  return lane_total(lanes);
}

// The float types decode element by element; a remainder below kLanes is handled at the end.
template <float (*Load)(const void*, int64_t)>
float dot_floats(const void* row, const float* x, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) lanes[k] += Load(row, i + k) * x[i + k];
  float s = lane_total(lanes);
  for (; i < n; ++i) s += Load(row, i) * x[i];
  return s;
}

float load_f32(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
float load_f16(const void* p, int64_t i) { return fp16_to_f32(static_cast<const uint16_t*>(p)[i]); }
float load_bf16(const void* p, int64_t i) { return bf16_to_f32(static_cast<const uint16_t*>(p)[i]); }

}  // namespace

VecDotFn vec_dot_scalar_kernel(TensorType type) {
  switch (type) {
    case TensorType::F32: return dot_floats<load_f32>;
    case TensorType::F16: return dot_floats<load_f16>;
    case TensorType::BF16: return dot_floats<load_bf16>;
    case TensorType::Q4_0: return dot_blocks<dequantize_q4_0, 32, sizeof(BlockQ4_0)>;
    case TensorType::Q4_1: return dot_blocks<dequantize_q4_1, 32, sizeof(BlockQ4_1)>;
    case TensorType::Q5_0: return dot_blocks<dequantize_q5_0, 32, sizeof(BlockQ5_0)>;
    case TensorType::Q5_1: return dot_blocks<dequantize_q5_1, 32, sizeof(BlockQ5_1)>;
    case TensorType::Q8_0: return dot_blocks<dequantize_q8_0, 32, sizeof(BlockQ8_0)>;
    case TensorType::IQ4_NL: return dot_blocks<dequantize_iq4_nl, 32, sizeof(BlockIQ4_NL)>;
    case TensorType::MXFP4: return dot_blocks<dequantize_mxfp4, 32, sizeof(BlockMXFP4)>;
    case TensorType::Q2_K: return dot_blocks<dequantize_q2_k, 256, sizeof(BlockQ2_K)>;
    case TensorType::Q3_K: return dot_blocks<dequantize_q3_k, 256, sizeof(BlockQ3_K)>;
    case TensorType::Q4_K: return dot_blocks<dequantize_q4_k, 256, sizeof(BlockQ4_K)>;
    case TensorType::Q5_K: return dot_blocks<dequantize_q5_k, 256, sizeof(BlockQ5_K)>;
    case TensorType::Q6_K: return dot_blocks<dequantize_q6_k, 256, sizeof(BlockQ6_K)>;
    case TensorType::IQ4_XS: return dot_blocks<dequantize_iq4_xs, 256, sizeof(BlockIQ4_XS)>;
    default: return nullptr;
  }
}

}  // namespace pipellm::detail

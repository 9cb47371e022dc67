// Per-format row dequantizers behind dequantize_row's dispatch (internal to kernels/cpu).
// Each decodes n_blocks consecutive blocks of its format into dst.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/cpu/block_formats.h"

namespace pipellm::detail {

// An MXFP4 block's scale 2^(e - 128) as a float (block_formats.h), for the CPU kernels.
inline float mxfp4_scale(uint8_t e) {
  const uint32_t bits = mxfp4_scale_bits(e);
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

void dequantize_q4_0(const void* src, float* dst, int64_t n_blocks);
void dequantize_q4_1(const void* src, float* dst, int64_t n_blocks);
void dequantize_q5_0(const void* src, float* dst, int64_t n_blocks);
void dequantize_q5_1(const void* src, float* dst, int64_t n_blocks);
void dequantize_q8_0(const void* src, float* dst, int64_t n_blocks);
void dequantize_iq4_nl(const void* src, float* dst, int64_t n_blocks);
void dequantize_mxfp4(const void* src, float* dst, int64_t n_blocks);

void dequantize_q2_k(const void* src, float* dst, int64_t n_blocks);
void dequantize_q3_k(const void* src, float* dst, int64_t n_blocks);
void dequantize_q4_k(const void* src, float* dst, int64_t n_blocks);
void dequantize_q5_k(const void* src, float* dst, int64_t n_blocks);
void dequantize_q6_k(const void* src, float* dst, int64_t n_blocks);

void dequantize_iq4_xs(const void* src, float* dst, int64_t n_blocks);

}  // namespace pipellm::detail

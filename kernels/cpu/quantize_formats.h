// Per-format row quantizers behind quantize_row's dispatch (internal to kernels/cpu).
// Each encodes n_blocks blocks of its format from consecutive floats.
#pragma once
#include <cstdint>

namespace pipellm::detail {

void quantize_q8_0(const float* src, void* dst, int64_t n_blocks);
void quantize_q4_0(const float* src, void* dst, int64_t n_blocks);
void quantize_q4_k(const float* src, void* dst, int64_t n_blocks);
void quantize_q5_k(const float* src, void* dst, int64_t n_blocks);
void quantize_q6_k(const float* src, void* dst, int64_t n_blocks);
void quantize_mxfp4(const float* src, void* dst, int64_t n_blocks);

}  // namespace pipellm::detail

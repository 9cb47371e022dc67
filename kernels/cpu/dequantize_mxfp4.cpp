// Dequantizer of MXFP4: 32-element blocks of E2M1 codes under one E8M0 power-of-two scale.
// Every product is exact (a small integer times a power of two, at most 12 * 2^127 which
// overflows to inf exactly as llama.cpp's does), so the result is bit-exact whatever the order.
#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/dequantize_formats.h"

namespace pipellm::detail {

void dequantize_mxfp4(const void* src, float* dst, int64_t n_blocks) {
  const auto* b = static_cast<const BlockMXFP4*>(src);
  for (int64_t i = 0; i < n_blocks; ++i, dst += kQK) {
    const float d = mxfp4_scale(b[i].e);
    for (int j = 0; j < kQK / 2; ++j) {
      dst[j] = static_cast<float>(kMXFP4Values[b[i].qs[j] & 0xF]) * d;
      dst[j + kQK / 2] = static_cast<float>(kMXFP4Values[b[i].qs[j] >> 4]) * d;
    }
  }
}

}  // namespace pipellm::detail

// Quantizer of MXFP4, choosing what llama.cpp's quantize_row_mxfp4_ref chooses (so files written
// here match llama-quantize's byte for byte):
//   scale: e = floor(log2(max|x|)) - 2 + 127, i.e. the block's largest magnitude lands in
//          [4, 8) times 2^(e - 127), the top of E2M1's range (6) and beyond up to twice it;
//          log2f itself (not the float's exponent bits) because for a max just below a power of
//          two log2f may round up to the integer, and llama.cpp takes that rounding as it comes.
//   codes: each element the code whose value (kMXFP4Values[q] * 2^(e - 128)) is nearest, scanning
//          codes 0..15 and keeping the first on ties (so 0 beats -0, and a tie between two
//          magnitudes takes the smaller).
// Where llama.cpp's float-to-uint8_t conversion is undefined (max|x| below 2^-125, or infinite)
// the scale saturates to 0 or 255 instead; NaNs never become the maximum and decode to 0.
#include <cmath>

#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/dequantize_formats.h"
#include "kernels/cpu/quantize_formats.h"

namespace pipellm::detail {
namespace {

uint8_t block_exponent(const float* x) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) amax = std::fabs(x[j]);  // comparison order skips NaNs
  }
  if (!(amax > 0.0f)) return 0;
  const float e = std::floor(log2f(amax)) - 2.0f + 127.0f;
  if (!(e > 0.0f)) return 0;
  if (!(e < 255.0f)) return 255;
  return static_cast<uint8_t>(e);
}

uint8_t nearest_code(float x, float d) {
  int best = 0;
  float best_err = std::fabs(static_cast<float>(kMXFP4Values[0]) * d - x);
  for (int q = 1; q < 16; ++q) {
    const float err = std::fabs(static_cast<float>(kMXFP4Values[q]) * d - x);
    if (err < best_err) {
      best = q;
      best_err = err;
    }
  }
  return static_cast<uint8_t>(best);
}

}  // namespace

void quantize_mxfp4(const float* src, void* dst, int64_t n_blocks) {
  auto* b = static_cast<BlockMXFP4*>(dst);
  for (int64_t i = 0; i < n_blocks; ++i, src += kQK) {
    b[i].e = block_exponent(src);
    const float d = mxfp4_scale(b[i].e);
    for (int j = 0; j < kQK / 2; ++j) {
      b[i].qs[j] = static_cast<uint8_t>(nearest_code(src[j], d) | (nearest_code(src[j + kQK / 2], d) << 4));
    }
  }
}

}  // namespace pipellm::detail

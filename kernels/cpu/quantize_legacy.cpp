// Quantizers of the 32-element block formats Q8_0 and Q4_0. Elements are re-rounded against
// the fp16-rounded block scale actually stored, so the stored grid is the one fitted.
#include <cmath>

#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/quantize_formats.h"
#include "kernels/cpu/quantize_search.h"

namespace pipellm::detail {

void quantize_q8_0(const float* src, void* dst, int64_t n_blocks) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n_blocks; ++i, src += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(src[j]));
    b[i].d = scale_to_fp16(amax / 127.0f);
    const float d = fp16_to_f32(b[i].d);
    const float id = d > 0 ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK; ++j) {
      b[i].qs[j] = static_cast<int8_t>(round_clamped(src[j] * id, -127, 127));
    }
  }
}

void quantize_q4_0(const float* src, void* dst, int64_t n_blocks) {
  auto* b = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n_blocks; ++i, src += kQK) {
    b[i].d = scale_to_fp16(fit_symmetric(src, kQK, 8));
    const float d = fp16_to_f32(b[i].d);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t q[kQK];
    for (int j = 0; j < kQK; ++j) {
      q[j] = static_cast<uint8_t>(round_clamped(src[j] * id, -8, 7) + 8);
    }
    for (int j = 0; j < kQK / 2; ++j) b[i].qs[j] = static_cast<uint8_t>(q[j] | (q[j + kQK / 2] << 4));
  }
}

}  // namespace pipellm::detail

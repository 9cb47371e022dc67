// Dequantizer of IQ4_XS: 256-element super-blocks of 8 sub-blocks through the IQ4_NL codebook.
#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/dequantize_formats.h"
#include "kernels/cpu/fp16.h"

namespace pipellm::detail {

void dequantize_iq4_xs(const void* src, float* dst, int64_t n_blocks) {
  const auto* b = static_cast<const BlockIQ4_XS*>(src);
  for (int64_t i = 0; i < n_blocks; ++i) {
    const float d = fp16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, dst += 32) {
      const float dl = d * static_cast<float>(iq4xs_scale(b[i], ib));
      const uint8_t* q = b[i].qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        dst[j] = dl * static_cast<float>(kIQ4NLValues[q[j] & 0xF]);
        dst[j + 16] = dl * static_cast<float>(kIQ4NLValues[q[j] >> 4]);
      }
    }
  }
}

}  // namespace pipellm::detail

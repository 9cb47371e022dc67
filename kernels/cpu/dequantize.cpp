// dequantize_row: checks the row geometry, decodes the float types, dispatches the block formats.
#include "kernels/cpu/dequantize.h"

#include <cstring>
#include <string>

#include "base/error.h"
#include "kernels/cpu/dequantize_formats.h"
#include "kernels/cpu/fp16.h"

namespace pipellm {

void dequantize_row(TensorType type, const void* src, float* dst, int64_t n) {
  const auto& info = tensor_type_info(type);
  if (n < 0 || n % info.block_size != 0)
    throw Error(std::string("dequantize_row: ") + std::to_string(n) + " elements is not a whole number of " +
                info.name + " blocks (" + std::to_string(info.block_size) + ")");
  const int64_t nb = n / info.block_size;
  switch (type) {
    case TensorType::F32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::F16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(h[i]);
      return;
    }
    case TensorType::BF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(h[i]);
      return;
    }
    case TensorType::Q4_0: return detail::dequantize_q4_0(src, dst, nb);
    case TensorType::Q4_1: return detail::dequantize_q4_1(src, dst, nb);
    case TensorType::Q5_0: return detail::dequantize_q5_0(src, dst, nb);
    case TensorType::Q5_1: return detail::dequantize_q5_1(src, dst, nb);
    case TensorType::Q8_0: return detail::dequantize_q8_0(src, dst, nb);
    case TensorType::IQ4_NL: return detail::dequantize_iq4_nl(src, dst, nb);
    case TensorType::MXFP4: return detail::dequantize_mxfp4(src, dst, nb);
    case TensorType::Q2_K: return detail::dequantize_q2_k(src, dst, nb);
    case TensorType::Q3_K: return detail::dequantize_q3_k(src, dst, nb);
    case TensorType::Q4_K: return detail::dequantize_q4_k(src, dst, nb);
    case TensorType::Q5_K: return detail::dequantize_q5_k(src, dst, nb);
    case TensorType::Q6_K: return detail::dequantize_q6_k(src, dst, nb);
    case TensorType::IQ4_XS: return detail::dequantize_iq4_xs(src, dst, nb);
    default:
      throw Error(std::string("dequantize_row: no CPU dequantizer for tensor type ") + info.name);
  }
}

}  // namespace pipellm

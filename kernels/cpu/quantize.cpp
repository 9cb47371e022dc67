// quantize_row: checks the row geometry, encodes the float types, dispatches the block formats.
#include "kernels/cpu/quantize.h"

#include <cstring>
#include <string>

#include "base/error.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/quantize_formats.h"

namespace pipellm {

bool can_quantize(TensorType type) {
  switch (type) {
    case TensorType::F32:
    case TensorType::F16:
    case TensorType::BF16:
    case TensorType::Q8_0:
    case TensorType::Q4_0:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K:
    case TensorType::MXFP4:
      return true;
    default:
      return false;
  }
}

size_t quantize_row(TensorType type, const float* src, void* dst, int64_t n) {
  const auto& info = tensor_type_info(type);
  if (!can_quantize(type))
    throw Error(std::string("quantize_row: no CPU quantizer for tensor type ") + info.name);
  if (n < 0 || n % info.block_size != 0)
    throw Error(std::string("quantize_row: ") + std::to_string(n) + " elements is not a whole number of " +
                info.name + " blocks (" + std::to_string(info.block_size) + ")");
  const int64_t nb = n / info.block_size;
  switch (type) {
    case TensorType::F32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      break;
    case TensorType::F16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_fp16(src[i]);
      break;
    }
    case TensorType::BF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(src[i]);
      break;
    }
    case TensorType::Q8_0: detail::quantize_q8_0(src, dst, nb); break;
    case TensorType::Q4_0: detail::quantize_q4_0(src, dst, nb); break;
    case TensorType::Q4_K: detail::quantize_q4_k(src, dst, nb); break;
    case TensorType::Q5_K: detail::quantize_q5_k(src, dst, nb); break;
    case TensorType::Q6_K: detail::quantize_q6_k(src, dst, nb); break;
    case TensorType::MXFP4: detail::quantize_mxfp4(src, dst, nb); break;
    default:  // can_quantize and this switch disagree: a type was added to one only
      throw Error(std::string("quantize_row: tensor type ") + info.name + " has no quantizer in the dispatch");
  }
  return static_cast<size_t>(nb) * info.block_bytes;
}

}  // namespace pipellm

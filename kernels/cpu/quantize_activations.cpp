// Activation rounding to 8-bit blocks. Round half away from zero by adding +-0.5 and
// truncating: independent of the FPU rounding mode, so every thread and every call rounds the
// same vector to the same bytes (decode and prefill must agree).
#include "kernels/cpu/quantize_activations.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/util/error.h"

namespace pipellm {

namespace {

// Rounds len elements into q and returns their scale (NaN, with q zero, for a non-finite input).
float round_block(const float* x, int len, int8_t* q) {
  float amax = 0;
  bool finite = true;
  for (int i = 0; i < len; ++i) {
    amax = std::max(amax, std::fabs(x[i]));
    finite = finite && std::isfinite(x[i]);
  }
  if (!finite) {
    std::fill(q, q + len, int8_t{0});
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float d = amax / 127.0f;
  const float id = d > 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < len; ++i) {
    const float v = x[i] * id;
    // |v| <= 127 up to rounding of id; the clamp keeps the cast in range.
    const float r = std::clamp(v + (v >= 0 ? 0.5f : -0.5f), -127.0f, 127.0f);
    q[i] = static_cast<int8_t>(static_cast<int>(r));
  }
  return d;
}

}  // namespace

ActQuant act_quant_for(TensorType weight_type) {
  switch (weight_type) {
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q8_0:
    case TensorType::IQ4_NL: return ActQuant::Q8x32;
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K:
    case TensorType::IQ4_XS: return ActQuant::Q8x256;
    default: return ActQuant::None;
  }
}

int64_t act_quant_block_size(ActQuant q) {
  switch (q) {
    case ActQuant::Q8x32: return 32;
    case ActQuant::Q8x256: return 256;
    case ActQuant::None: break;
  }
  throw Error("act_quant_block_size: no block size for float activations");
}

size_t act_quant_bytes(ActQuant q, int64_t n) {
  const int64_t nb = n / act_quant_block_size(q);
  return static_cast<size_t>(nb) * (q == ActQuant::Q8x32 ? sizeof(ActQ8Block32) : sizeof(ActQ8Block256));
}

void quantize_activations(ActQuant q, const float* x, int64_t n, void* dst) {
  if (q == ActQuant::Q8x32) {
    auto* b = static_cast<ActQ8Block32*>(dst);
    for (int64_t i = 0; i < n / 32; ++i, x += 32) {
      b[i].d = round_block(x, 32, b[i].qs);
      int32_t s = 0;
      for (int8_t v : b[i].qs) s += v;
      b[i].sum = s;
    }
    return;
  }
  if (q == ActQuant::Q8x256) {
    auto* b = static_cast<ActQ8Block256*>(dst);
    for (int64_t i = 0; i < n / 256; ++i, x += 256) {
      b[i].d = round_block(x, 256, b[i].qs);
      for (int k = 0; k < 16; ++k) {
        int s = 0;
        for (int j = 0; j < 16; ++j) s += b[i].qs[16 * k + j];
        b[i].bsums[k] = static_cast<int16_t>(s);
      }
    }
    return;
  }
  throw Error("quantize_activations: ActQuant::None has no blocks");
}

float act_quant_value(ActQuant q, const void* src, int64_t i) {
  if (q == ActQuant::Q8x32) {
    const auto& b = static_cast<const ActQ8Block32*>(src)[i / 32];
    return b.d * b.qs[i % 32];
  }
  const auto& b = static_cast<const ActQ8Block256*>(src)[i / 256];
  return b.d * b.qs[i % 256];
}

}  // namespace pipellm

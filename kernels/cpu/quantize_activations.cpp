// Activation rounding to 8-bit blocks, in the manner of llama.cpp's Q8_0 / Q8_K activations:
//   32-blocks:  d = max|x| / 127, q = round(x * 127 / max|x|);
//   256-blocks: s = -127 / m with m the element of largest magnitude (the first one), q =
//               min(127, round(s x)), d = 1 / s (so d may be negative; d q has x's sign).
// Scales stay float (not fp16): later parts of a split hold values far below fp16's range.
// round() is to nearest with ties to even, done by the float adder: independent of libm, the
// same in every thread and every call.
#include "kernels/cpu/quantize_activations.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/quantize_activations_avx2.h"
#include "kernels/cpu/vec_dot.h"

namespace pipellm {

namespace {

// Nearest integer, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves the rounded integer
// in the low mantissa bits (the FPU's default rounding mode does the rounding).
inline int round_even(float v) {
  const float t = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &t, 4);
  return (bits & 0x007FFFFF) - 0x00400000;
}

// max |x| over the block; false for a NaN or infinity.
bool absmax(const float* x, int len, bool avx2, float* amax) {
  if (avx2) return detail::absmax_avx2(x, len, amax);
  bool finite = true;
  float m = 0;
  for (int i = 0; i < len; ++i) {
    finite = finite && std::isfinite(x[i]);
    m = std::max(m, std::fabs(x[i]));
  }
  *amax = m;
  return finite;
}

// q[i] = round_even(x[i] * mul), at most 127 (|x mul| <= 127 up to rounding in both callers).
void round_scaled(const float* x, int len, float mul, bool avx2, int8_t* q) {
  if (avx2) {
    detail::round_scaled_avx2(x, len, mul, q);
    return;
  }
  for (int i = 0; i < len; ++i) q[i] = static_cast<int8_t>(std::min(127, round_even(x[i] * mul)));
}

// One 32-block: returns d, fills q.
float round_block32(const float* x, bool avx2, int8_t* q) {
  float amax;
  if (!absmax(x, 32, avx2, &amax)) {
    std::fill(q, q + 32, int8_t{0});
    return std::numeric_limits<float>::quiet_NaN();
  }
  round_scaled(x, 32, amax > 0 ? 127.0f / amax : 0.0f, avx2, q);
  return amax / 127.0f;
}

// One 256-block: returns d, fills q.
float round_block256(const float* x, bool avx2, int8_t* q) {
  float amax;
  if (!absmax(x, 256, avx2, &amax)) {
    std::fill(q, q + 256, int8_t{0});
    return std::numeric_limits<float>::quiet_NaN();
  }
  if (amax == 0) {
    std::fill(q, q + 256, int8_t{0});
    return 0.0f;
  }
  int first = 0;  // the first element of largest magnitude gives the sign
  while (std::fabs(x[first]) != amax) ++first;
  const float s = -127.0f / x[first];
  round_scaled(x, 256, s, avx2, q);
  return 1.0f / s;
}

}  // namespace

ActQuant act_quant_for(TensorType weight_type) {
  switch (weight_type) {
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q8_0:
    case TensorType::IQ4_NL:
    case TensorType::MXFP4: return ActQuant::Q8x32;
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
  const bool avx2 = vec_dot_isa_available(VecDotIsa::Avx2);
  if (q == ActQuant::Q8x32) {
    auto* b = static_cast<ActQ8Block32*>(dst);
    for (int64_t i = 0; i < n / 32; ++i, x += 32) {
      b[i].d = round_block32(x, avx2, b[i].qs);
      int32_t s = 0;
      for (int8_t v : b[i].qs) s += v;
      b[i].sum = s;
    }
    return;
  }
  if (q == ActQuant::Q8x256) {
    auto* b = static_cast<ActQ8Block256*>(dst);
    for (int64_t i = 0; i < n / 256; ++i, x += 256) {
      b[i].d = round_block256(x, avx2, b[i].qs);
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

namespace {

// r[j] -= d q[j] (add: r[j] += d q[j]) for one block: the residual a split's next part rounds,
// and the float round trip.
template <typename Block>
void add_block(const uint8_t* src, bool add, bool avx2, float* r) {
  const auto* b = reinterpret_cast<const Block*>(src);
  constexpr int kLen = sizeof(b->qs);
  if (avx2) {
    detail::add_scaled_avx2(b->qs, b->d, kLen, add, r);
    return;
  }
  for (int j = 0; j < kLen; ++j) {
    const float v = b->d * static_cast<float>(b->qs[j]);
    r[j] = add ? r[j] + v : r[j] - v;
  }
}

void add_values(ActQuant q, const uint8_t* block, bool add, bool avx2, float* r) {
  if (q == ActQuant::Q8x32) {
    add_block<ActQ8Block32>(block, add, avx2, r);
  } else {
    add_block<ActQ8Block256>(block, add, avx2, r);
  }
}

}  // namespace

void quantize_activations_split(ActQuant q, const float* x, int64_t n, int parts, void* dst) {
  const bool avx2 = vec_dot_isa_available(VecDotIsa::Avx2);
  const int64_t bs = act_quant_block_size(q);
  const size_t bb = act_quant_bytes(q, bs), pb = act_quant_bytes(q, n);
  auto* out = static_cast<uint8_t*>(dst);
  float r[256];
  for (int64_t i = 0; i < n / bs; ++i, x += bs) {
    std::copy(x, x + bs, r);
    for (int p = 0; p < parts; ++p) {
      uint8_t* block = out + static_cast<size_t>(p) * pb + static_cast<size_t>(i) * bb;
      quantize_activations(q, r, bs, block);
      if (p + 1 < parts) add_values(q, block, false, avx2, r);  // what the next part rounds
    }
  }
}

void round_activations(ActQuant q, const float* x, int64_t n, int parts, float* out) {
  const bool avx2 = vec_dot_isa_available(VecDotIsa::Avx2);
  const int64_t bs = act_quant_block_size(q);
  const size_t pb = act_quant_bytes(q, bs);
  std::vector<uint8_t> blocks(pb * static_cast<size_t>(parts));
  for (int64_t i = 0; i < n; i += bs) {
    quantize_activations_split(q, x + i, bs, parts, blocks.data());
    std::fill(out + i, out + i + bs, 0.0f);
    for (int p = 0; p < parts; ++p) add_values(q, blocks.data() + static_cast<size_t>(p) * pb, true, avx2, out + i);
  }
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

// Portable integer dot products with 8-bit activations: the fallback where AVX2 is missing
// and the reference the AVX2 kernels are checked against. Each block (or sub-block) sums
// weight quant times activation quant exactly in int32, then applies weight scale times
// activation scale once; constant terms (mins, Q4_1's m, Q6_K's -32) use the activation sums.
#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/dequantize_formats.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/vec_dot_q8.h"

namespace pipellm::detail {
namespace {

// Element j (0..31) of a 32-element nibble block: low nibbles first, then high ones.
inline int nibble(const uint8_t* qs, int j) { return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4); }

float dot_q8_0(const void* row, const void* xq, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  const auto* x = static_cast<const ActQ8Block32*>(xq);
  float s = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < 32; ++j) isum += b[i].qs[j] * x[i].qs[j];
    s += fp16_to_f32(b[i].d) * x[i].d * static_cast<float>(isum);
  }
  return s;
}

float dot_q4_0(const void* row, const void* xq, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  const auto* x = static_cast<const ActQ8Block32*>(xq);
  float s = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < 32; ++j) isum += (nibble(b[i].qs, j) - 8) * x[i].qs[j];
    s += fp16_to_f32(b[i].d) * x[i].d * static_cast<float>(isum);
  }
  return s;
}

float dot_q4_1(const void* row, const void* xq, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(row);
  const auto* x = static_cast<const ActQ8Block32*>(xq);
  float s = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < 32; ++j) isum += nibble(b[i].qs, j) * x[i].qs[j];
    s += fp16_to_f32(b[i].d) * x[i].d * static_cast<float>(isum) +
         fp16_to_f32(b[i].m) * x[i].d * static_cast<float>(x[i].sum);
  }
  return s;
}

float dot_iq4_nl(const void* row, const void* xq, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_NL*>(row);
  const auto* x = static_cast<const ActQ8Block32*>(xq);
  float s = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < 32; ++j) isum += kIQ4NLValues[nibble(b[i].qs, j)] * x[i].qs[j];
    s += fp16_to_f32(b[i].d) * x[i].d * static_cast<float>(isum);
  }
  return s;
}

float dot_mxfp4(const void* row, const void* xq, int64_t n) {
  const auto* b = static_cast<const BlockMXFP4*>(row);
  const auto* x = static_cast<const ActQ8Block32*>(xq);
  float s = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < 32; ++j) isum += kMXFP4Values[nibble(b[i].qs, j)] * x[i].qs[j];
    s += mxfp4_scale(b[i].e) * x[i].d * static_cast<float>(isum);
  }
  return s;
}

// Q4_K and Q5_K: sub-block j (32 elements) is nibble j%2 of qs[32*(j/2) ..]; Q5_K adds bit j
// of qh[l] as the 5th bit.
template <bool kFive, typename Block>
float dot_q45_k(const void* row, const void* xq, int64_t n) {
  const auto* b = static_cast<const Block*>(row);
  const auto* x = static_cast<const ActQ8Block256*>(xq);
  float s = 0;
  for (int64_t i = 0; i < n / 256; ++i) {
    int32_t isum = 0, msum = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, mn;
      unpack_k4_scale_min(b[i].scales, j, &sc, &mn);
      const uint8_t* qs = b[i].qs + 32 * (j / 2);
      int32_t sub = 0;
      for (int l = 0; l < 32; ++l) {
        int q = (qs[l] >> (4 * (j % 2))) & 0xF;
        if constexpr (kFive) q |= ((b[i].qh[l] >> j) & 1) << 4;
        sub += q * x[i].qs[32 * j + l];
      }
      isum += sc * sub;
      msum += mn * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
    }
    s += fp16_to_f32(b[i].d) * x[i].d * static_cast<float>(isum) -
         fp16_to_f32(b[i].dmin) * x[i].d * static_cast<float>(msum);
  }
  return s;
}

float dot_q6_k(const void* row, const void* xq, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(row);
  const auto* x = static_cast<const ActQ8Block256*>(xq);
  float s = 0;
  for (int64_t i = 0; i < n / 256; ++i) {
    int32_t isum = 0;
    const int8_t* xs = x[i].qs;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      for (int k = 0; k < 4; ++k) {
        for (int half16 = 0; half16 < 2; ++half16) {
          int32_t sub = 0;
          for (int l = 16 * half16; l < 16 * half16 + 16; ++l) {
            const int lo = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 0xF;
            const int q = (lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
            sub += q * xs[128 * h + 32 * k + l];
          }
          isum += b[i].scales[8 * h + 2 * k + half16] * sub;
        }
      }
    }
    s += fp16_to_f32(b[i].d) * x[i].d * static_cast<float>(isum);
  }
  return s;
}

float dot_iq4_xs(const void* row, const void* xq, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_XS*>(row);
  const auto* x = static_cast<const ActQ8Block256*>(xq);
  float s = 0;
  for (int64_t i = 0; i < n / 256; ++i) {
    int32_t isum = 0;
    for (int ib = 0; ib < 8; ++ib) {
      int32_t sub = 0;
      for (int j = 0; j < 32; ++j) sub += kIQ4NLValues[nibble(b[i].qs + 16 * ib, j)] * x[i].qs[32 * ib + j];
      isum += iq4xs_scale(b[i], ib) * sub;
    }
    s += fp16_to_f32(b[i].d) * x[i].d * static_cast<float>(isum);
  }
  return s;
}

// Several tokens: one at a time.
template <VecDotQ8Fn F>
void tokens(const void* row, const void* xq, size_t xb, int nt, int64_t n, float* out) {
  for (int t = 0; t < nt; ++t) out[t] = F(row, static_cast<const uint8_t*>(xq) + static_cast<size_t>(t) * xb, n);
}

template <VecDotQ8Fn F>
constexpr VecDotQ8Kernels kernels() {
  return {F, tokens<F>};
}

}  // namespace

VecDotQ8Kernels vec_dot_q8_scalar_kernels(TensorType type) {
  switch (type) {
    case TensorType::Q8_0: return kernels<dot_q8_0>();
    case TensorType::Q4_0: return kernels<dot_q4_0>();
    case TensorType::Q4_1: return kernels<dot_q4_1>();
    case TensorType::IQ4_NL: return kernels<dot_iq4_nl>();
    case TensorType::MXFP4: return kernels<dot_mxfp4>();
    case TensorType::Q4_K: return kernels<dot_q45_k<false, BlockQ4_K>>();
    case TensorType::Q5_K: return kernels<dot_q45_k<true, BlockQ5_K>>();
    case TensorType::Q6_K: return kernels<dot_q6_k>();
    case TensorType::IQ4_XS: return kernels<dot_iq4_xs>();
    default: return {};
  }
}

}  // namespace pipellm::detail

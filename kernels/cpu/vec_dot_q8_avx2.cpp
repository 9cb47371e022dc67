// AVX2 integer dot products with 8-bit activations (vec_dot_q8.h), compiled for AVX2 by
// function attributes and chosen at run time.
//
// _mm256_maddubs_epi16 multiplies unsigned weight bytes by signed activation bytes and adds
// adjacent pairs into int16; _mm256_madd_epi16 then widens to int32, multiplying by a
// sub-block scale (or by 1). Signed weights go through the sign trick: |w| times x with w's
// sign moved onto x. No int16 pair can saturate: activations are in [-127, 127] and weights
// are at most 63 (unsigned) or 128 in magnitude (signed), so a pair is at most 2*128*127.
// Per super-block int32 sums stay below 2^29. Each block's integer sum is scaled once in float.
#include "kernels/cpu/vec_dot_q8.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/avx2_helpers.h"
#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/dequantize_formats.h"

namespace pipellm::detail {
namespace {

using avx2::half;
using avx2::hsum;

PIPELLM_AVX2 inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Eight int32 partial sums of u[j] * s[j] over 32 bytes (u unsigned, s signed).
PIPELLM_AVX2 inline __m256i mul_sum_u8_i8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// Both signed: |a| times b with a's sign carried over to b.
PIPELLM_AVX2 inline __m256i mul_sum_i8_i8(__m256i a, __m256i b) {
  return mul_sum_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

// 16 packed nibble bytes -> 32 bytes: the low nibbles (elements 0..15) then the high ones.
PIPELLM_AVX2 inline __m256i unpack_nibbles16(const uint8_t* qs) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), mask), _mm_and_si128(b, mask));
}

// The 8 (scale, min) pairs of Q4_K/Q5_K at once, by 32-bit masks (little-endian, as x86 is):
// scales/mins 0..3 are the low 6 bits of bytes 0..3 / 4..7; 4..7 take their low 4 bits from
// the nibbles of bytes 8..11 and their top 2 bits from the top bits of bytes 0..3 / 4..7.
inline void k4_scales_mins(const uint8_t* s12, uint8_t* sc, uint8_t* mn) {
  uint32_t a, b, c;
  std::memcpy(&a, s12, 4);
  std::memcpy(&b, s12 + 4, 4);
  std::memcpy(&c, s12 + 8, 4);
  const uint32_t sc03 = a & 0x3F3F3F3Fu, mn03 = b & 0x3F3F3F3Fu;
  const uint32_t sc47 = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
  const uint32_t mn47 = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
  std::memcpy(sc, &sc03, 4);
  std::memcpy(sc + 4, &sc47, 4);
  std::memcpy(mn, &mn03, 4);
  std::memcpy(mn + 4, &mn47, 4);
}

// Every kernel takes NT tokens at once (xq + t * xb for t < NT): the weights are loaded and
// unpacked once and met by each token's activations. Each token's arithmetic is the same
// sequence of operations for any NT, so out[t] has the same bits as the one-token kernel.

PIPELLM_AVX2 inline const ActQ8Block32* blocks32(const uint8_t* xq, size_t xb, int t) {
  return reinterpret_cast<const ActQ8Block32*>(xq + static_cast<size_t>(t) * xb);
}

PIPELLM_AVX2 inline const ActQ8Block256* blocks256(const uint8_t* xq, size_t xb, int t) {
  return reinterpret_cast<const ActQ8Block256*>(xq + static_cast<size_t>(t) * xb);
}

// Q8_0, Q4_0, IQ4_NL and MXFP4: signed weights (Q8_0 as stored, q - 8, or a 16-entry codebook:
// IQ4_NL's, or MXFP4's doubled E2M1 values, whose block scale is a power of two, not fp16).
enum class Signed32 { Q8_0, Q4_0, IQ4_NL, MXFP4 };

template <Signed32 kFormat, typename Block, int NT>
PIPELLM_AVX2 void dot_signed32(const void* row, const uint8_t* xq, size_t xb, int64_t n, float* out) {
  const auto* b = static_cast<const Block*>(row);
  const int8_t* codebook = kFormat == Signed32::MXFP4 ? kMXFP4Values : kIQ4NLValues;
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codebook)));
  const __m256i eight = _mm256_set1_epi8(8);
  __m256 acc[NT];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / 32; ++i) {
    __m256i w;
    float dw;
    if constexpr (kFormat == Signed32::Q8_0) {
      w = load256(b[i].qs);
    } else if constexpr (kFormat == Signed32::Q4_0) {
      w = _mm256_sub_epi8(unpack_nibbles16(b[i].qs), eight);
    } else {
      w = _mm256_shuffle_epi8(table, unpack_nibbles16(b[i].qs));
    }
    if constexpr (kFormat == Signed32::MXFP4) {
      dw = mxfp4_scale(b[i].e);
    } else {
      dw = half(b[i].d);
    }
    const __m256i aw = _mm256_sign_epi8(w, w);
    for (int t = 0; t < NT; ++t) {
      const ActQ8Block32& x = blocks32(xq, xb, t)[i];
      const __m256i p = mul_sum_u8_i8(aw, _mm256_sign_epi8(load256(x.qs), w));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d), _mm256_cvtepi32_ps(p), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

template <int NT>
PIPELLM_AVX2 void dot_q4_1(const void* row, const uint8_t* xq, size_t xb, int64_t n, float* out) {
  const auto* b = static_cast<const BlockQ4_1*>(row);
  __m256 acc[NT];
  float mins[NT];
  for (int t = 0; t < NT; ++t) {
    acc[t] = _mm256_setzero_ps();
    mins[t] = 0;
  }
  for (int64_t i = 0; i < n / 32; ++i) {
    const __m256i w = unpack_nibbles16(b[i].qs);
    const float dw = half(b[i].d), mw = half(b[i].m);
    for (int t = 0; t < NT; ++t) {
      const ActQ8Block32& x = blocks32(xq, xb, t)[i];
      const __m256 p = _mm256_cvtepi32_ps(mul_sum_u8_i8(w, load256(x.qs)));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d), p, acc[t]);
      mins[t] += mw * x.d * static_cast<float>(x.sum);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]) + mins[t];
}

// Q4_K and Q5_K: chunk c of 64 elements = sub-blocks 2c (low nibbles of 32 bytes) and 2c+1
// (high nibbles); Q5_K's 5th bits of those sub-blocks are bits 2c and 2c+1 of qh[l].
template <bool kFive, typename Block, int NT>
PIPELLM_AVX2 void dot_q45_k(const void* row, const uint8_t* xq, size_t xb, int64_t n, float* out) {
  const auto* b = static_cast<const Block*>(row);
  const __m256i mask = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m256 acc[NT];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / 256; ++i) {
    alignas(8) uint8_t sc[8], mn[8];
    k4_scales_mins(b[i].scales, sc, mn);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFive) qh = load256(b[i].qh);
    __m256i isum[NT];
    for (auto& s : isum) s = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load256(b[i].qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, mask);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
      if constexpr (kFive) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
        qh = _mm256_srli_epi16(qh, 2);
      }
      const __m256i s_lo = _mm256_set1_epi16(sc[2 * c]), s_hi = _mm256_set1_epi16(sc[2 * c + 1]);
      for (int t = 0; t < NT; ++t) {
        const int8_t* q8 = blocks256(xq, xb, t)[i].qs + 64 * c;
        const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(q8)), s_lo);
        const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(q8 + 32)), s_hi);
        isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(p_lo, p_hi));
      }
    }
    const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn));
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));  // each min twice (per 16)
    const float dw = half(b[i].d), mw = half(b[i].dmin);
    for (int t = 0; t < NT; ++t) {
      const ActQ8Block256& x = blocks256(xq, xb, t)[i];
      const __m256i msum = _mm256_madd_epi16(load256(x.bsums), m16);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
      acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(mw * x.d), _mm256_cvtepi32_ps(msum), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

// Q6_K: in each 128-element half, elements 32k..32k+31 take nibble k/2 of ql[32*(k%2) ..] and
// bits 2k, 2k+1 of qh; their two 16-element sub-blocks have scales 2k, 2k+1. Quants are used
// unsigned (0..63); the -32 offset comes back as -32 * sum_j scale_j * bsums[j].
template <int NT>
PIPELLM_AVX2 void dot_q6_k(const void* row, const uint8_t* xq, size_t xb, int64_t n, float* out) {
  const auto* b = static_cast<const BlockQ6_K*>(row);
  const __m256i mask4 = _mm256_set1_epi8(0x0F), mask2 = _mm256_set1_epi8(0x03);
  __m256 acc[NT];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / 256; ++i) {
    const int8_t* sc = b[i].scales;
    __m256i isum[NT];
    for (auto& s : isum) s = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i qla = load256(b[i].ql + 64 * h);
      const __m256i qlb = load256(b[i].ql + 64 * h + 32);
      __m256i qh = load256(b[i].qh + 32 * h);
      for (int k = 0; k < 4; ++k) {
        const __m256i ql = k % 2 ? qlb : qla;
        const __m256i lo = _mm256_and_si256(k / 2 ? _mm256_srli_epi16(ql, 4) : ql, mask4);
        const __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, mask2), 4));
        qh = _mm256_srli_epi16(qh, 2);
        const int j = 8 * h + 2 * k;
        const __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[j + 1]), _mm_set1_epi16(sc[j]));
        for (int t = 0; t < NT; ++t) {
          const int8_t* q8 = blocks256(xq, xb, t)[i].qs + 128 * h + 32 * k;
          isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q, load256(q8)), s));
        }
      }
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    const float dw = half(b[i].d);
    for (int t = 0; t < NT; ++t) {
      const ActQ8Block256& x = blocks256(xq, xb, t)[i];
      const __m256i offset = _mm256_madd_epi16(load256(x.bsums), sc16);
      const __m256i total = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(offset, 5));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d), _mm256_cvtepi32_ps(total), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

// IQ4_XS: 8 sub-blocks of 32 through the IQ4_NL codebook, each with a signed 6-bit scale.
template <int NT>
PIPELLM_AVX2 void dot_iq4_xs(const void* row, const uint8_t* xq, size_t xb, int64_t n, float* out) {
  const auto* b = static_cast<const BlockIQ4_XS*>(row);
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4NLValues)));
  __m256 acc[NT];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / 256; ++i) {
    __m256i isum[NT];
    for (auto& s : isum) s = _mm256_setzero_si256();
    for (int ib = 0; ib < 8; ++ib) {
      const __m256i w = _mm256_shuffle_epi8(table, unpack_nibbles16(b[i].qs + 16 * ib));
      const __m256i aw = _mm256_sign_epi8(w, w);
      const __m256i ls = _mm256_set1_epi16(static_cast<int16_t>(iq4xs_scale(b[i], ib)));
      for (int t = 0; t < NT; ++t) {
        const __m256i xv = load256(blocks256(xq, xb, t)[i].qs + 32 * ib);
        const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, w));
        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, ls));
      }
    }
    const float dw = half(b[i].d);
    for (int t = 0; t < NT; ++t) {
      const ActQ8Block256& x = blocks256(xq, xb, t)[i];
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

// Each format as a class template over NT, so the entry points below can take it as one argument.
template <int NT> struct KQ8_0 { static constexpr auto run = dot_signed32<Signed32::Q8_0, BlockQ8_0, NT>; };
template <int NT> struct KQ4_0 { static constexpr auto run = dot_signed32<Signed32::Q4_0, BlockQ4_0, NT>; };
template <int NT> struct KIQ4_NL { static constexpr auto run = dot_signed32<Signed32::IQ4_NL, BlockIQ4_NL, NT>; };
template <int NT> struct KMXFP4 { static constexpr auto run = dot_signed32<Signed32::MXFP4, BlockMXFP4, NT>; };
template <int NT> struct KQ4_1 { static constexpr auto run = dot_q4_1<NT>; };
template <int NT> struct KQ4_K { static constexpr auto run = dot_q45_k<false, BlockQ4_K, NT>; };
template <int NT> struct KQ5_K { static constexpr auto run = dot_q45_k<true, BlockQ5_K, NT>; };
template <int NT> struct KQ6_K { static constexpr auto run = dot_q6_k<NT>; };
template <int NT> struct KIQ4_XS { static constexpr auto run = dot_iq4_xs<NT>; };

template <template <int> class K>
PIPELLM_AVX2 float one_token(const void* row, const void* xq, int64_t n) {
  float out;
  K<1>::run(row, static_cast<const uint8_t*>(xq), 0, n, &out);
  return out;
}

template <template <int> class K>
PIPELLM_AVX2 void tokens(const void* row, const void* xq, size_t xb, int nt, int64_t n, float* out) {
  const auto* p = static_cast<const uint8_t*>(xq);
  for (; nt >= 4; nt -= 4, p += 4 * xb, out += 4) K<4>::run(row, p, xb, n, out);
  if (nt == 3) K<3>::run(row, p, xb, n, out);
  if (nt == 2) K<2>::run(row, p, xb, n, out);
  if (nt == 1) K<1>::run(row, p, xb, n, out);
}

template <template <int> class K>
constexpr VecDotQ8Kernels kernels() {
  return {one_token<K>, tokens<K>};
}

}  // namespace

VecDotQ8Kernels vec_dot_q8_avx2_kernels(TensorType type) {
  switch (type) {
    case TensorType::Q8_0: return kernels<KQ8_0>();
    case TensorType::Q4_0: return kernels<KQ4_0>();
    case TensorType::Q4_1: return kernels<KQ4_1>();
    case TensorType::IQ4_NL: return kernels<KIQ4_NL>();
    case TensorType::MXFP4: return kernels<KMXFP4>();
    case TensorType::Q4_K: return kernels<KQ4_K>();
    case TensorType::Q5_K: return kernels<KQ5_K>();
    case TensorType::Q6_K: return kernels<KQ6_K>();
    case TensorType::IQ4_XS: return kernels<KIQ4_XS>();
    default: return {};
  }
}

}  // namespace pipellm::detail

#else  // not x86: no AVX2 kernels

namespace pipellm::detail {
VecDotQ8Kernels vec_dot_q8_avx2_kernels(TensorType) { return {}; }
}  // namespace pipellm::detail

#endif

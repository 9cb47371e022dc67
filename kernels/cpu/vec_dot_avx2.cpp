// AVX2 + FMA + F16C dot-product kernels, compiled for those instructions by function
// attributes (the build has no -march flags) and chosen at run time by vec_dot_kernel.
// Quants are widened to int32 and converted to float, multiplied with x by FMA into a
// per-sub-block vector sum, and the sub-block's scale (and min times sum x) applied once.
#include "kernels/cpu/vec_dot_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels/cpu/avx2_helpers.h"
#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/dequantize_formats.h"

namespace pipellm::detail {
namespace {

using avx2::half;
using avx2::hsum;

// 8 bytes (the low half of a 128-bit register) as unsigned / signed ints, then floats.
PIPELLM_AVX2 inline __m256 u8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
PIPELLM_AVX2 inline __m256 i8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

// sum over 32 elements of q[j] * x[j], q given as 32 bytes (unsigned or signed).
PIPELLM_AVX2 inline __m256 dot32_u8(__m256i q, const float* x) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  __m256 s = _mm256_mul_ps(u8_to_ps(lo), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(u8_to_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(u8_to_ps(hi), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(u8_to_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
}

PIPELLM_AVX2 inline __m256 dot32_i8(__m256i q, const float* x) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  __m256 s = _mm256_mul_ps(i8_to_ps(lo), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(i8_to_ps(hi), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
}

// Sum of 32 floats as a vector (for the min term of affine formats).
PIPELLM_AVX2 inline __m256 sum32(const float* x) {
  return _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)),
                       _mm256_add_ps(_mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24)));
}

// 16 packed nibble bytes -> 32 bytes: the low nibbles (elements 0..15) then the high ones.
PIPELLM_AVX2 inline __m256i unpack_nibbles16(const uint8_t* qs) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), mask), _mm_and_si128(b, mask));
}

PIPELLM_AVX2 float dot_f32(const void* row, const float* x, int64_t n) {
  const float* w = static_cast<const float*>(row);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

PIPELLM_AVX2 inline __m256 load8_f16(const uint16_t* h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}

PIPELLM_AVX2 inline __m256 load8_bf16(const uint16_t* h) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

template <__m256 (*Load8)(const uint16_t*), float (*Load1)(uint16_t)>
PIPELLM_AVX2 float dot_half_type(const void* row, const float* x, int64_t n) {
  const uint16_t* w = static_cast<const uint16_t*>(row);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(Load8(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(Load8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(Load8(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(Load8(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(Load8(w + i), _mm256_loadu_ps(x + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += Load1(w[i]) * x[i];
  return s;
}

PIPELLM_AVX2 float bf16_scalar(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

PIPELLM_AVX2 float dot_q8_0(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(b[i].d)), dot32_i8(q, x), acc);
  }
  return hsum(acc);
}

PIPELLM_AVX2 float dot_q4_0(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  const __m256i eight = _mm256_set1_epi8(8);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const __m256i q = _mm256_sub_epi8(unpack_nibbles16(b[i].qs), eight);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(b[i].d)), dot32_i8(q, x), acc);
  }
  return hsum(acc);
}

PIPELLM_AVX2 float dot_q4_1(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(row);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(b[i].d)), dot32_u8(unpack_nibbles16(b[i].qs), x), acc);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(b[i].m)), sum32(x), acc);
  }
  return hsum(acc);
}

PIPELLM_AVX2 float dot_iq4_nl(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_NL*>(row);
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4NLValues)));
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const __m256i q = _mm256_shuffle_epi8(table, unpack_nibbles16(b[i].qs));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(b[i].d)), dot32_i8(q, x), acc);
  }
  return hsum(acc);
}

// MXFP4: as IQ4_NL with the E2M1 table and a power-of-two block scale.
PIPELLM_AVX2 float dot_mxfp4(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockMXFP4*>(row);
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kMXFP4Values)));
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const __m256i q = _mm256_shuffle_epi8(table, unpack_nibbles16(b[i].qs));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(mxfp4_scale(b[i].e)), dot32_i8(q, x), acc);
  }
  return hsum(acc);
}

// Q4_K: chunk c of 64 elements = sub-blocks 2c (low nibbles of 32 bytes) and 2c+1 (high).
PIPELLM_AVX2 float dot_q4_k(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(row);
  const __m256i mask = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = half(b[i].d), dmin = half(b[i].dmin);
    for (int c = 0; c < 4; ++c, x += 64) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * c));
      uint8_t sc, mn;
      unpack_k4_scale_min(b[i].scales, 2 * c, &sc, &mn);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc), dot32_u8(_mm256_and_si256(q, mask), x), acc);
      acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * mn), sum32(x), acc);
      unpack_k4_scale_min(b[i].scales, 2 * c + 1, &sc, &mn);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc),
                            dot32_u8(_mm256_and_si256(_mm256_srli_epi16(q, 4), mask), x + 32), acc);
      acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * mn), sum32(x + 32), acc);
    }
  }
  return hsum(acc);
}

// Q5_K: as Q4_K; the 5th bits of sub-blocks 2c and 2c+1 are bits 2c, 2c+1 of qh[l].
PIPELLM_AVX2 float dot_q5_k(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(row);
  const __m256i mask = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = half(b[i].d), dmin = half(b[i].dmin);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh));
    for (int c = 0; c < 4; ++c, x += 64) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * c));
      const __m256i h_lo = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c)), one);
      const __m256i h_hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c + 1)), one);
      const __m256i q_lo = _mm256_or_si256(_mm256_and_si256(q, mask), _mm256_slli_epi16(h_lo, 4));
      const __m256i q_hi =
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), mask), _mm256_slli_epi16(h_hi, 4));
      uint8_t sc, mn;
      unpack_k4_scale_min(b[i].scales, 2 * c, &sc, &mn);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc), dot32_u8(q_lo, x), acc);
      acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * mn), sum32(x), acc);
      unpack_k4_scale_min(b[i].scales, 2 * c + 1, &sc, &mn);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc), dot32_u8(q_hi, x + 32), acc);
      acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * mn), sum32(x + 32), acc);
    }
  }
  return hsum(acc);
}

// Q6_K: in each 128-element half, the 32 elements 32k..32k+31 take nibble k/2 of
// ql[32*(k%2) ..] and bits 2k, 2k+1 of qh; their two 16-element sub-blocks have scales 2k, 2k+1.
PIPELLM_AVX2 float dot_q6_k(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(row);
  const __m256i mask4 = _mm256_set1_epi8(0x0F), mask2 = _mm256_set1_epi8(0x03);
  const __m256i bias = _mm256_set1_epi8(32);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = half(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const __m256i qla = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].ql + 64 * h));
      const __m256i qlb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh + 32 * h));
      const int8_t* sc = b[i].scales + 8 * h;
      for (int k = 0; k < 4; ++k, x += 32) {
        const __m256i ql = k % 2 ? qlb : qla;
        const __m256i lo = _mm256_and_si256(k / 2 ? _mm256_srli_epi16(ql, 4) : ql, mask4);
        const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), mask2);
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), bias);
        const __m128i q0 = _mm256_castsi256_si128(q), q1 = _mm256_extracti128_si256(q, 1);
        const __m256 s0 = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(x + 8),
                                          _mm256_mul_ps(i8_to_ps(q0), _mm256_loadu_ps(x)));
        const __m256 s1 = _mm256_fmadd_ps(i8_to_ps(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(x + 24),
                                          _mm256_mul_ps(i8_to_ps(q1), _mm256_loadu_ps(x + 16)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[2 * k]), s0, acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[2 * k + 1]), s1, acc);
      }
    }
  }
  return hsum(acc);
}

// IQ4_XS: 8 sub-blocks of 32 through the IQ4_NL codebook (a byte shuffle).
PIPELLM_AVX2 float dot_iq4_xs(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_XS*>(row);
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4NLValues)));
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = half(b[i].d);
    for (int ib = 0; ib < 8; ++ib, x += 32) {
      const __m256i q = _mm256_shuffle_epi8(table, unpack_nibbles16(b[i].qs + 16 * ib));
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * static_cast<float>(iq4xs_scale(b[i], ib))), dot32_i8(q, x), acc);
    }
  }
  return hsum(acc);
}

PIPELLM_AVX2 float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }

}  // namespace

VecDotFn vec_dot_avx2_kernel(TensorType type) {
  switch (type) {
    case TensorType::F32: return dot_f32;
    case TensorType::F16: return dot_half_type<load8_f16, f16_scalar>;
    case TensorType::BF16: return dot_half_type<load8_bf16, bf16_scalar>;
    case TensorType::Q8_0: return dot_q8_0;
    case TensorType::Q4_0: return dot_q4_0;
    case TensorType::Q4_1: return dot_q4_1;
    case TensorType::IQ4_NL: return dot_iq4_nl;
    case TensorType::MXFP4: return dot_mxfp4;
    case TensorType::Q4_K: return dot_q4_k;
    case TensorType::Q5_K: return dot_q5_k;
    case TensorType::Q6_K: return dot_q6_k;
    case TensorType::IQ4_XS: return dot_iq4_xs;
    default: return nullptr;
  }
}

}  // namespace pipellm::detail

#else  // not x86: no AVX2 kernels

namespace pipellm::detail {
VecDotFn vec_dot_avx2_kernel(TensorType) { return nullptr; }
}  // namespace pipellm::detail

#endif

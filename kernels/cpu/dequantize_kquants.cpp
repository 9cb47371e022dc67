// Dequantizers of the K-quant super-block formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
// Every sub-block's effective scale is formed first (d * sc, dmin * m) and then applied to
// the integer quant, the order the format definitions use, so results are bit-exact.
#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/dequantize_formats.h"
#include "kernels/cpu/fp16.h"

namespace pipellm::detail {

// Q2_K: each 128-element half uses 32 bytes of qs; shift s (0,2,4,6) selects elements
// 32*s/2 .. +32 of that half; sub-blocks of 16 take scales in order.
void dequantize_q2_k(const void* src, float* dst, int64_t n_blocks) {
  const auto* b = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n_blocks; ++i) {
    const float d = fp16_to_f32(b[i].d);
    const float dmin = fp16_to_f32(b[i].dmin);
    int is = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b[i].qs + 32 * half;
      for (int shift = 0; shift < 8; shift += 2) {
        for (int k = 0; k < 2; ++k, ++is) {
          const float dl = d * static_cast<float>(b[i].scales[is] & 0xF);
          const float ml = dmin * static_cast<float>(b[i].scales[is] >> 4);
          for (int l = 0; l < 16; ++l) *dst++ = dl * static_cast<float>((q[16 * k + l] >> shift) & 3) - ml;
        }
      }
    }
  }
}

// Q3_K: same walk as Q2_K; the high bit of element e lives in hmask[e % 32] bit (e / 32).
void dequantize_q3_k(const void* src, float* dst, int64_t n_blocks) {
  const auto* b = static_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n_blocks; ++i) {
    const float d = fp16_to_f32(b[i].d);
    int is = 0;
    uint8_t m = 1;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b[i].qs + 32 * half;
      for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
        for (int k = 0; k < 2; ++k, ++is) {
          const float dl = d * static_cast<float>(q3k_scale(b[i].scales, is));
          for (int l = 0; l < 16; ++l) {
            const int lo = (q[16 * k + l] >> shift) & 3;
            const int qv = lo - ((b[i].hmask[16 * k + l] & m) ? 0 : 4);
            *dst++ = dl * static_cast<float>(qv);
          }
        }
      }
    }
  }
}

// Q4_K: 4 chunks of 64 elements; 32 bytes each; low nibbles first sub-block, high nibbles second.
void dequantize_q4_k(const void* src, float* dst, int64_t n_blocks) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n_blocks; ++i) {
    const float d = fp16_to_f32(b[i].d);
    const float dmin = fp16_to_f32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b[i].qs + 32 * c;
      uint8_t sc, mn;
      unpack_k4_scale_min(b[i].scales, 2 * c, &sc, &mn);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
      unpack_k4_scale_min(b[i].scales, 2 * c + 1, &sc, &mn);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
      for (int l = 0; l < 32; ++l) *dst++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

// Q5_K: as Q4_K; chunk c's two sub-blocks take their 5th bit from qh bits 2c and 2c+1.
void dequantize_q5_k(const void* src, float* dst, int64_t n_blocks) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n_blocks; ++i) {
    const float d = fp16_to_f32(b[i].d);
    const float dmin = fp16_to_f32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b[i].qs + 32 * c;
      const int s1 = 2 * c, s2 = 2 * c + 1;
      uint8_t sc, mn;
      unpack_k4_scale_min(b[i].scales, s1, &sc, &mn);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
      unpack_k4_scale_min(b[i].scales, s2, &sc, &mn);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(mn);
      for (int l = 0; l < 32; ++l)
        *dst++ = d1 * static_cast<float>((q[l] & 0xF) | (((b[i].qh[l] >> s1) & 1) << 4)) - m1;
      for (int l = 0; l < 32; ++l)
        *dst++ = d2 * static_cast<float>((q[l] >> 4) | (((b[i].qh[l] >> s2) & 1) << 4)) - m2;
    }
  }
}

// Q6_K: each 128-element half uses 64 bytes of ql and 32 of qh; element 32*k + l of the half
// takes nibble (k / 2) of ql[l + 32 * (k % 2)] and bits 2k..2k+1 of qh[l].
void dequantize_q6_k(const void* src, float* dst, int64_t n_blocks) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n_blocks; ++i) {
    const float d = fp16_to_f32(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b[i].ql + 64 * half;
      const uint8_t* qh = b[i].qh + 32 * half;
      const int8_t* sc = b[i].scales + 8 * half;
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const int lo = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 0xF;
          const int q = (lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
          const float dl = d * static_cast<float>(sc[2 * k + l / 16]);
          *dst++ = dl * static_cast<float>(q);
        }
      }
    }
  }
}

}  // namespace pipellm::detail

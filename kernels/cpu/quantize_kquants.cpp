// Quantizers of the K-quant formats Q4_K, Q5_K and Q6_K. Each sub-block's grid is fitted by a
// small least-squares search; the sub-block scales are then quantized against a super-block
// scale, and every element is re-rounded against the scale that is actually stored.
#include <cmath>
#include <cstring>

#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/quantize_formats.h"
#include "kernels/cpu/quantize_search.h"

namespace pipellm::detail {
namespace {

// Quantizes 8 (scale, -min) pairs to 6 bits against fp16 super-scales and packs them as
// unpack_k4_scale_min reads them. Returns the effective per-sub-block (scale, min) in dl/ml.
void pack_k4_scales(const AffineFit* fits, uint16_t* d_out, uint16_t* dmin_out, uint8_t* packed, float* dl,
                    float* ml) {
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    max_scale = std::fmax(max_scale, fits[j].scale);
    max_min = std::fmax(max_min, -fits[j].min);
  }
  *d_out = scale_to_fp16(max_scale / 63.0f);
  *dmin_out = scale_to_fp16(max_min / 63.0f);
  const float d = fp16_to_f32(*d_out), dmin = fp16_to_f32(*dmin_out);
  const float id = d > 0 ? 1.0f / d : 0.0f, idmin = dmin > 0 ? 1.0f / dmin : 0.0f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = static_cast<uint8_t>(round_clamped(fits[j].scale * id, 0, 63));
    lm[j] = static_cast<uint8_t>(round_clamped(-fits[j].min * idmin, 0, 63));
    dl[j] = d * static_cast<float>(ls[j]);
    ml[j] = dmin * static_cast<float>(lm[j]);
  }
  std::memset(packed, 0, kKScaleBytes);
  for (int j = 0; j < 4; ++j) {
    packed[j] = ls[j];
    packed[j + 4] = lm[j];
  }
  for (int j = 4; j < 8; ++j) {
    packed[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
    packed[j - 4] = static_cast<uint8_t>(packed[j - 4] | ((ls[j] >> 4) << 6));
    packed[j] = static_cast<uint8_t>(packed[j] | ((lm[j] >> 4) << 6));
  }
}

// Fits and rounds one 256-element super-block to q in 0..nmax with packed 6-bit scales.
void quantize_k4_levels(const float* x, int nmax, uint16_t* d, uint16_t* dmin, uint8_t* scales, uint8_t* q) {
  AffineFit fits[8];
  for (int j = 0; j < 8; ++j) fits[j] = fit_affine32(x + 32 * j, nmax);
  float dl[8], ml[8];
  pack_k4_scales(fits, d, dmin, scales, dl, ml);
  for (int j = 0; j < 8; ++j) {
    const float idl = dl[j] > 0 ? 1.0f / dl[j] : 0.0f;
    for (int l = 0; l < 32; ++l)
      q[32 * j + l] = static_cast<uint8_t>(round_clamped((x[32 * j + l] + ml[j]) * idl, 0, nmax));
  }
}

}  // namespace

void quantize_q4_k(const float* src, void* dst, int64_t n_blocks) {
  auto* b = static_cast<BlockQ4_K*>(dst);
  for (int64_t i = 0; i < n_blocks; ++i, src += kQKK) {
    uint8_t q[kQKK];
    quantize_k4_levels(src, 15, &b[i].d, &b[i].dmin, b[i].scales, q);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        b[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void quantize_q5_k(const float* src, void* dst, int64_t n_blocks) {
  auto* b = static_cast<BlockQ5_K*>(dst);
  for (int64_t i = 0; i < n_blocks; ++i, src += kQKK) {
    uint8_t q[kQKK];
    quantize_k4_levels(src, 31, &b[i].d, &b[i].dmin, b[i].scales, q);
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        b[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        b[i].qh[l] = static_cast<uint8_t>(b[i].qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

void quantize_q6_k(const float* src, void* dst, int64_t n_blocks) {
  auto* b = static_cast<BlockQ6_K*>(dst);
  for (int64_t i = 0; i < n_blocks; ++i, src += kQKK) {
    float scales[16];
    float max_abs = 0, max_scale = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_symmetric(src + 16 * j, 16, 32);
      if (std::fabs(scales[j]) > max_abs) {
        max_abs = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    uint8_t q[kQKK];
    if (max_abs == 0) {
      std::memset(&b[i], 0, sizeof(b[i]));
      std::memset(q, 32, sizeof(q));
    } else {
      // The sub-block scale of largest magnitude maps to -128, using the full int8 range.
      const float iscale = -128.0f / max_scale;
      b[i].d = scale_to_fp16(1.0f / iscale);
      const float d = fp16_to_f32(b[i].d);
      for (int j = 0; j < 16; ++j) {
        const int32_t sc = round_clamped(iscale * scales[j], -128, 127);
        b[i].scales[j] = static_cast<int8_t>(sc);
        const float dl = d * static_cast<float>(sc);
        const float idl = dl != 0 ? 1.0f / dl : 0.0f;
        for (int l = 0; l < 16; ++l)
          q[16 * j + l] = static_cast<uint8_t>(round_clamped(src[16 * j + l] * idl, -32, 31) + 32);
      }
    }
    std::memset(b[i].ql, 0, sizeof(b[i].ql));
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int half = 0; half < 2; ++half) {
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t v = q[128 * half + 32 * k + l];
          uint8_t& ql = b[i].ql[64 * half + l + 32 * (k % 2)];
          ql = static_cast<uint8_t>(ql | ((v & 0xF) << (4 * (k / 2))));
          uint8_t& qh = b[i].qh[32 * half + l];
          qh = static_cast<uint8_t>(qh | ((v >> 4) << (2 * k)));
        }
      }
    }
  }
}

}  // namespace pipellm::detail

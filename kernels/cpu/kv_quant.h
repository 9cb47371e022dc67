// Quantizing KV cache rows into Q8_0 / Q4_0 blocks (block_formats.h), as llama.cpp's ggml_cpy
// from f32 does when the cache type is q8_0/q4_0 (quantize_row_q8_0_ref / quantize_row_q4_0_ref
// and the CUDA cpy_blck_f32_q8_0 / cpy_blck_f32_q4_0 kernels): plain round-to-nearest from the
// block's largest magnitude, no scale search (the weight quantizers of quantize.h search, which
// a store on every token cannot afford and the GPU would have to repeat bit for bit).
//
//   Q8_0: d = amax / 127, q = roundf(x / d)            (x ~ d * q, q in -127..127)
//   Q4_0: d = m / -8 (m: the value of largest |x|, the first one on ties),
//         q = min(15, trunc(fma(x, 1/d, 8.5)))        (x ~ d * (q - 8), q in 0..15)
// with 1/d taken once per block from the unrounded f32 d, the stored scale fp16(d).
//
// The CPU store (engine/model/kv_cache.cpp) and the CUDA store (kernels/cuda/rope.cu, one lane
// per element) call the same element functions: each step is one correctly rounded IEEE
// operation on both sides (the device spells them as _rn intrinsics so that --use_fast_math and
// FMA contraction cannot change them), so the bytes they write are identical.
#pragma once
#include <stdint.h>

#include "base/tensor_type.h"
#include "kernels/cpu/block_formats.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif
#if !defined(__CUDA_ARCH__)
#include <cmath>

#include "kernels/cpu/fp16.h"
#endif

namespace pipellm::kvq {

PIPELLM_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

PIPELLM_HD uint16_t to_fp16_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(v));
#else
  return f32_to_fp16(v);
#endif
}

PIPELLM_HD float from_fp16_bits(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  return fp16_to_f32(h);
#endif
}

// Bytes of one head of D values in a cache row: F32, F16, or whole Q8_0 / Q4_0 blocks (D a
// multiple of 32; the callers check the type and D). Constant where its arguments are.
PIPELLM_HD constexpr int64_t head_bytes(TensorType type, int D) {
  switch (type) {
    case TensorType::F32: return 4 * static_cast<int64_t>(D);
    case TensorType::Q8_0: return D / kQK * static_cast<int64_t>(sizeof(BlockQ8_0));
    case TensorType::Q4_0: return D / kQK * static_cast<int64_t>(sizeof(BlockQ4_0));
    default: return 2 * static_cast<int64_t>(D);  // F16
  }
}

// 1/d, or 0 for a block of zeros.
PIPELLM_HD float inverse(float d) { return d != 0.0f ? div_rn(1.0f, d) : 0.0f; }

// Q8_0 scale from the block's largest |x|.
PIPELLM_HD float q8_scale(float amax) { return div_rn(amax, 127.0f); }

// roundf(x * id) (halves away from zero, as ggml); clamped first so a NaN or an overflow gives
// a defined code (ggml's cast is undefined there; finite blocks never reach the clamp).
PIPELLM_HD int8_t q8_code(float x, float id) {
#if defined(__CUDA_ARCH__)
  float v = __fmul_rn(x, id);
  v = fminf(fmaxf(v, -127.0f), 127.0f);
  return static_cast<int8_t>(__float2int_rz(roundf(v)));
#else
  float v = x * id;
  v = std::fmin(std::fmax(v, -127.0f), 127.0f);
  return static_cast<int8_t>(std::round(v));
#endif
}

// Q4_0 scale from the value of largest magnitude (signed).
PIPELLM_HD float q4_scale(float max_signed) { return div_rn(max_signed, -8.0f); }

// min(15, (int)(x * id + 8.5)) with x * id + 8.5 as one fused multiply-add: what ggml's code
// becomes under nvcc and in FMA builds (contraction), and the one form that cannot differ
// between host and device whatever a compiler contracts. It lies in [0, 16.5] for a finite
// block, where the clamp to [0, 15] before truncating changes nothing; a NaN gives 0.
PIPELLM_HD uint8_t q4_code(float x, float id) {
#if defined(__CUDA_ARCH__)
  float v = __fmaf_rn(x, id, 8.5f);
  v = fminf(fmaxf(v, 0.0f), 15.0f);
  return static_cast<uint8_t>(__float2int_rz(v));
#else
  float v = std::fma(x, id, 8.5f);
  v = std::fmin(std::fmax(v, 0.0f), 15.0f);
  return static_cast<uint8_t>(v);
#endif
}

#if !defined(__CUDA_ARCH__)
// Host: n_blocks consecutive blocks from 32 * n_blocks floats.
inline void quantize_q8_0(const float* x, BlockQ8_0* b, int64_t n_blocks) {
  for (int64_t i = 0; i < n_blocks; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = q8_scale(amax);
    const float id = inverse(d);
    b[i].d = to_fp16_bits(d);
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = q8_code(x[j], id);
  }
}

inline void quantize_q4_0(const float* x, BlockQ4_0* b, int64_t n_blocks) {
  for (int64_t i = 0; i < n_blocks; ++i, x += kQK) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(x[j])) {  // strictly greater: the first of equal magnitudes wins
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = q4_scale(max);
    const float id = inverse(d);
    b[i].d = to_fp16_bits(d);
    for (int j = 0; j < kQK / 2; ++j) {
      b[i].qs[j] = static_cast<uint8_t>(q4_code(x[j], id) | (q4_code(x[j + kQK / 2], id) << 4));
    }
  }
}
#endif

}  // namespace pipellm::kvq

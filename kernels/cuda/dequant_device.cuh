// Device-side element decoders for every supported weight type, reading the device layout of
// kernels/cuda/weight_layout.h. deq<T>(w, nb, bi, j) is element j of block bi of a tensor of nb
// blocks. These are the slow, general path (used by the generic mat-vec, the dequantizing
// kernels and the embedding lookup); the fast mat-vec kernels decode whole chunks themselves.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "base/tensor_type.h"
#include "kernels/cpu/block_formats.h"

namespace pipellm::cuda {

__device__ __forceinline__ float f16_bits(uint16_t u) { return __half2float(__ushort_as_half(u)); }
__device__ __forceinline__ uint16_t ld_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// The IQ4_NL codebook (kIQ4NLValues) packed into two words: no memory access.
__device__ __forceinline__ int iq4_value(int idx) {
  const uint64_t word = idx < 8 ? 0xF6EADDCFBFAD9881ull : 0x7159453526190D01ull;
  return static_cast<int8_t>(static_cast<uint8_t>(word >> (8 * (idx & 7))));
}

// MXFP4's doubled E2M1 codebook (kMXFP4Values): the magnitude of code idx & 7 from one word
// (0, 1, 2, 3, 4, 6, 8, 12), bit 3 the sign. No memory access.
__device__ __forceinline__ int mxfp4_value(int idx) {
  const int mag = static_cast<int>((0x0C08060403020100ull >> (8 * (idx & 7))) & 0xFF);
  return idx & 8 ? -mag : mag;
}

// An MXFP4 block's scale 2^(e - 128) (exact: built from its bits).
__device__ __forceinline__ float mxfp4_scale(uint8_t e) { return __uint_as_float(mxfp4_scale_bits(e)); }

template <TensorType T>
struct TypeTraits;
#define PIPELLM_TRAITS(T_, BS)              \
  template <>                               \
  struct TypeTraits<TensorType::T_> {       \
    static constexpr int block_size = BS;   \
  };
PIPELLM_TRAITS(F32, 1)
PIPELLM_TRAITS(F16, 1)
PIPELLM_TRAITS(BF16, 1)
PIPELLM_TRAITS(Q4_0, 32)
PIPELLM_TRAITS(Q4_1, 32)
PIPELLM_TRAITS(Q5_0, 32)
PIPELLM_TRAITS(Q5_1, 32)
PIPELLM_TRAITS(Q8_0, 32)
PIPELLM_TRAITS(Q2_K, 256)
PIPELLM_TRAITS(Q3_K, 256)
PIPELLM_TRAITS(Q4_K, 256)
PIPELLM_TRAITS(Q5_K, 256)
PIPELLM_TRAITS(Q6_K, 256)
PIPELLM_TRAITS(IQ4_NL, 32)
PIPELLM_TRAITS(IQ4_XS, 256)
PIPELLM_TRAITS(MXFP4, 32)
#undef PIPELLM_TRAITS

template <TensorType T>
__device__ __forceinline__ float deq(const uint8_t* w, int64_t nb, int64_t bi, int j);

template <>
__device__ __forceinline__ float deq<TensorType::F32>(const uint8_t* w, int64_t, int64_t bi, int) {
  return reinterpret_cast<const float*>(w)[bi];
}
template <>
__device__ __forceinline__ float deq<TensorType::F16>(const uint8_t* w, int64_t, int64_t bi, int) {
  return __half2float(reinterpret_cast<const __half*>(w)[bi]);
}
template <>
__device__ __forceinline__ float deq<TensorType::BF16>(const uint8_t* w, int64_t, int64_t bi, int) {
  return __uint_as_float(static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(w)[bi]) << 16);
}

// Q4_0 (repacked): qs at bi*16, d at nb*16 + bi*2.
template <>
__device__ __forceinline__ float deq<TensorType::Q4_0>(const uint8_t* w, int64_t nb, int64_t bi, int j) {
  const float d = f16_bits(ld_u16(w + nb * 16 + bi * 2));
  const uint8_t q = w[bi * 16 + (j & 15)];
  const int v = j < 16 ? (q & 0xF) : (q >> 4);
  return d * static_cast<float>(v - 8);
}
template <>
__device__ __forceinline__ float deq<TensorType::Q4_1>(const uint8_t* w, int64_t, int64_t bi, int j) {
  const uint8_t* b = w + bi * 20;
  const uint8_t q = b[4 + (j & 15)];
  const int v = j < 16 ? (q & 0xF) : (q >> 4);
  return f16_bits(ld_u16(b)) * static_cast<float>(v) + f16_bits(ld_u16(b + 2));
}
template <>
__device__ __forceinline__ float deq<TensorType::Q5_0>(const uint8_t* w, int64_t, int64_t bi, int j) {
  const uint8_t* b = w + bi * 22;
  const uint32_t qh = b[2] | (b[3] << 8) | (b[4] << 16) | (static_cast<uint32_t>(b[5]) << 24);
  const uint8_t q = b[6 + (j & 15)];
  const int v = (j < 16 ? (q & 0xF) : (q >> 4)) | (((qh >> j) & 1) << 4);
  return f16_bits(ld_u16(b)) * static_cast<float>(v - 16);
}
template <>
__device__ __forceinline__ float deq<TensorType::Q5_1>(const uint8_t* w, int64_t, int64_t bi, int j) {
  const uint8_t* b = w + bi * 24;
  const uint32_t qh = b[4] | (b[5] << 8) | (b[6] << 16) | (static_cast<uint32_t>(b[7]) << 24);
  const uint8_t q = b[8 + (j & 15)];
  const int v = (j < 16 ? (q & 0xF) : (q >> 4)) | (((qh >> j) & 1) << 4);
  return f16_bits(ld_u16(b)) * static_cast<float>(v) + f16_bits(ld_u16(b + 2));
}
// Q8_0 (repacked): qs at bi*32, d at nb*32 + bi*2.
template <>
__device__ __forceinline__ float deq<TensorType::Q8_0>(const uint8_t* w, int64_t nb, int64_t bi, int j) {
  const float d = f16_bits(ld_u16(w + nb * 32 + bi * 2));
  return d * static_cast<float>(static_cast<int8_t>(w[bi * 32 + j]));
}
template <>
__device__ __forceinline__ float deq<TensorType::IQ4_NL>(const uint8_t* w, int64_t, int64_t bi, int j) {
  const uint8_t* b = w + bi * 18;
  const uint8_t q = b[2 + (j & 15)];
  return f16_bits(ld_u16(b)) * static_cast<float>(iq4_value(j < 16 ? (q & 0xF) : (q >> 4)));
}
template <>
__device__ __forceinline__ float deq<TensorType::Q2_K>(const uint8_t* w, int64_t, int64_t bi, int e) {
  const uint8_t* b = w + bi * 84;
  const int n = e >> 7, r = e & 127, j = r >> 5, l32 = r & 31;
  const uint8_t sc = b[8 * n + 2 * j + (l32 >> 4)];
  const int q = (b[16 + 32 * n + l32] >> (2 * j)) & 3;
  return f16_bits(ld_u16(b + 80)) * static_cast<float>(sc & 0xF) * static_cast<float>(q) -
         f16_bits(ld_u16(b + 82)) * static_cast<float>(sc >> 4);
}
template <>
__device__ __forceinline__ float deq<TensorType::Q3_K>(const uint8_t* w, int64_t, int64_t bi, int e) {
  const uint8_t* b = w + bi * 110;
  const int n = e >> 7, r = e & 127, j = r >> 5, l32 = r & 31;
  const int is = 8 * n + 2 * j + (l32 >> 4);
  const int q = (b[32 + 32 * n + l32] >> (2 * j)) & 3;
  const int h = (b[l32] >> (4 * n + j)) & 1;
  return f16_bits(ld_u16(b + 108)) * static_cast<float>(q3k_scale(b + 96, is)) * static_cast<float>(q - (h ? 0 : 4));
}
template <>
__device__ __forceinline__ float deq<TensorType::Q4_K>(const uint8_t* w, int64_t, int64_t bi, int e) {
  const uint8_t* b = w + bi * 144;
  const int j = e >> 6, r = e & 63;
  uint8_t sc, m;
  unpack_k4_scale_min(b + 4, 2 * j + (r >> 5), &sc, &m);
  const uint8_t q = b[16 + 32 * j + (r & 31)];
  const int v = r < 32 ? (q & 0xF) : (q >> 4);
  return f16_bits(ld_u16(b)) * static_cast<float>(sc) * static_cast<float>(v) -
         f16_bits(ld_u16(b + 2)) * static_cast<float>(m);
}
template <>
__device__ __forceinline__ float deq<TensorType::Q5_K>(const uint8_t* w, int64_t, int64_t bi, int e) {
  const uint8_t* b = w + bi * 176;
  const int j = e >> 6, r = e & 63, half = r >> 5, l = r & 31;
  uint8_t sc, m;
  unpack_k4_scale_min(b + 4, 2 * j + half, &sc, &m);
  const uint8_t q = b[48 + 32 * j + l];
  const int v = (half ? (q >> 4) : (q & 0xF)) | (((b[16 + l] >> (2 * j + half)) & 1) << 4);
  return f16_bits(ld_u16(b)) * static_cast<float>(sc) * static_cast<float>(v) -
         f16_bits(ld_u16(b + 2)) * static_cast<float>(m);
}
// Q6_K (repacked): ql at bi*128, qh at nb*128 + bi*64, scales at nb*192 + bi*16, d at nb*208 + bi*2.
template <>
__device__ __forceinline__ float deq<TensorType::Q6_K>(const uint8_t* w, int64_t nb, int64_t bi, int e) {
  const int n = e >> 7, r = e & 127, quarter = r >> 5, l = r & 31;
  const uint8_t qlb = w[bi * 128 + 64 * n + l + (quarter & 1) * 32];
  const int lo = quarter >= 2 ? (qlb >> 4) : (qlb & 0xF);
  const int hi = (w[nb * 128 + bi * 64 + 32 * n + l] >> (2 * quarter)) & 3;
  const int8_t sc = static_cast<int8_t>(w[nb * 192 + bi * 16 + 8 * n + (l >> 4) + 2 * quarter]);
  const float d = f16_bits(ld_u16(w + nb * 208 + bi * 2));
  return d * static_cast<float>(sc) * static_cast<float>((lo | (hi << 4)) - 32);
}
template <>
__device__ __forceinline__ float deq<TensorType::IQ4_XS>(const uint8_t* w, int64_t, int64_t bi, int e) {
  const uint8_t* b = w + bi * 136;
  const int ib = e >> 5, l = e & 31;
  const uint16_t sh = ld_u16(b + 2);
  const int ls = (((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)) - 32;
  const uint8_t q = b[8 + 16 * ib + (l & 15)];
  return f16_bits(ld_u16(b)) * static_cast<float>(ls) * static_cast<float>(iq4_value(l < 16 ? (q & 0xF) : (q >> 4)));
}

// MXFP4 (repacked): qs at bi*16, e at nb*16 + bi. The product of a small integer and a power of
// two is exact, so this equals the CPU dequantizer bit for bit, except for e = 0 and 1: their
// scales are subnormal floats, which the kernels' flush-to-zero (--use_fast_math) reads as 0
// (values below 1e-37 either way; from e = 2 on every nonzero value is a normal float).
template <>
__device__ __forceinline__ float deq<TensorType::MXFP4>(const uint8_t* w, int64_t nb, int64_t bi, int j) {
  const uint8_t q = w[bi * 16 + (j & 15)];
  return static_cast<float>(mxfp4_value(j < 16 ? (q & 0xF) : (q >> 4))) * mxfp4_scale(w[nb * 16 + bi]);
}

// Eight consecutive elements at once: elements e0 .. e0 + 7 of block bi (e0 a multiple of 8,
// so they never cross a block), or for one-element blocks (F32, F16, BF16) blocks bi .. bi + 7.
// deq8_each decodes them one by one; deq8 reads the common formats with one scale decode and
// one 8-byte load of quants, so the tensor's base must be 8-byte aligned (cudaMalloc'd
// buffers, kStreamAlign offsets) — callers check and use deq8_each otherwise. Both equal
// deq<T> element for element.
template <TensorType T>
__device__ __forceinline__ void deq8_each(const uint8_t* w, int64_t nb, int64_t bi, int e0, float* o) {
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    o[k] = TypeTraits<T>::block_size == 1 ? deq<T>(w, nb, bi + k, 0) : deq<T>(w, nb, bi, e0 + k);
  }
}

template <TensorType T>
__device__ __forceinline__ void deq8(const uint8_t* w, int64_t nb, int64_t bi, int e0, float* o) {
  deq8_each<T>(w, nb, bi, e0, o);
}

// Nibble k (0..7) of the 8 bytes in q, low nibbles (shift 0) or high ones (shift 4).
__device__ __forceinline__ int nibble8(uint2 q, int k, int shift) {
  return static_cast<int>(((k < 4 ? q.x : q.y) >> (8 * (k & 3) + shift)) & 0xF);
}

// Q4_0 (repacked): the 8 quants of elements e0.. are one aligned 8-byte word of qs.
template <>
__device__ __forceinline__ void deq8<TensorType::Q4_0>(const uint8_t* w, int64_t nb, int64_t bi, int e0, float* o) {
  const float d = f16_bits(ld_u16(w + nb * 16 + bi * 2));
  const uint2 q = *reinterpret_cast<const uint2*>(w + bi * 16 + (e0 & 15));
  const int sh = e0 < 16 ? 0 : 4;
#pragma unroll
  for (int k = 0; k < 8; ++k) o[k] = d * static_cast<float>(nibble8(q, k, sh) - 8);
}
// Q8_0 (repacked): the 8 quants are one aligned 8-byte word.
template <>
__device__ __forceinline__ void deq8<TensorType::Q8_0>(const uint8_t* w, int64_t nb, int64_t bi, int e0, float* o) {
  const float d = f16_bits(ld_u16(w + nb * 32 + bi * 2));
  const uint2 q = *reinterpret_cast<const uint2*>(w + bi * 32 + e0);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    o[k] = d * static_cast<float>(static_cast<int8_t>(q.x >> (8 * k)));
    o[k + 4] = d * static_cast<float>(static_cast<int8_t>(q.y >> (8 * k)));
  }
}
// MXFP4 (repacked): elements j < 16 are the low nibbles of bytes j, j >= 16 the high nibbles
// of bytes j - 16.
template <>
__device__ __forceinline__ void deq8<TensorType::MXFP4>(const uint8_t* w, int64_t nb, int64_t bi, int e0, float* o) {
  const float d = mxfp4_scale(w[nb * 16 + bi]);
  const uint2 q = *reinterpret_cast<const uint2*>(w + bi * 16 + (e0 & 15));
  const int sh = e0 < 16 ? 0 : 4;
#pragma unroll
  for (int k = 0; k < 8; ++k) o[k] = static_cast<float>(mxfp4_value(nibble8(q, k, sh))) * d;
}
// Q4_K: 144-byte blocks; the 8 elements share one sub-block scale and minimum.
template <>
__device__ __forceinline__ void deq8<TensorType::Q4_K>(const uint8_t* w, int64_t, int64_t bi, int e0, float* o) {
  const uint8_t* b = w + bi * 144;
  const int j = e0 >> 6, r = e0 & 63;
  uint8_t sc, m;
  unpack_k4_scale_min(b + 4, 2 * j + (r >> 5), &sc, &m);
  const float d = f16_bits(ld_u16(b)) * static_cast<float>(sc), dm = f16_bits(ld_u16(b + 2)) * static_cast<float>(m);
  const uint2 q = *reinterpret_cast<const uint2*>(b + 16 + 32 * j + (r & 31));
  const int sh = r < 32 ? 0 : 4;
#pragma unroll
  for (int k = 0; k < 8; ++k) o[k] = d * static_cast<float>(nibble8(q, k, sh)) - dm;
}
// Q5_K: 176-byte blocks; fifth bits from the 8 bytes of qh at the elements' positions.
template <>
__device__ __forceinline__ void deq8<TensorType::Q5_K>(const uint8_t* w, int64_t, int64_t bi, int e0, float* o) {
  const uint8_t* b = w + bi * 176;
  const int j = e0 >> 6, r = e0 & 63, half = r >> 5, l = r & 31;
  uint8_t sc, m;
  unpack_k4_scale_min(b + 4, 2 * j + half, &sc, &m);
  const float d = f16_bits(ld_u16(b)) * static_cast<float>(sc), dm = f16_bits(ld_u16(b + 2)) * static_cast<float>(m);
  const uint2 q = *reinterpret_cast<const uint2*>(b + 48 + 32 * j + l);
  const uint2 qh = *reinterpret_cast<const uint2*>(b + 16 + l);
  const int hs = 2 * j + half;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int hi = static_cast<int>(((k < 4 ? qh.x : qh.y) >> (8 * (k & 3) + hs)) & 1);
    o[k] = d * static_cast<float>(nibble8(q, k, 4 * half) | (hi << 4)) - dm;
  }
}
// Q6_K (repacked): 8 bytes of ql and 8 of qh, one scale.
template <>
__device__ __forceinline__ void deq8<TensorType::Q6_K>(const uint8_t* w, int64_t nb, int64_t bi, int e0, float* o) {
  const int n = e0 >> 7, r = e0 & 127, quarter = r >> 5, l = r & 31;
  const uint2 ql = *reinterpret_cast<const uint2*>(w + bi * 128 + 64 * n + l + (quarter & 1) * 32);
  const uint2 qh = *reinterpret_cast<const uint2*>(w + nb * 128 + bi * 64 + 32 * n + l);
  const int8_t sc = static_cast<int8_t>(w[nb * 192 + bi * 16 + 8 * n + (l >> 4) + 2 * quarter]);
  const float d = f16_bits(ld_u16(w + nb * 208 + bi * 2)) * static_cast<float>(sc);
  const int sh = quarter >= 2 ? 4 : 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int hi = static_cast<int>(((k < 4 ? qh.x : qh.y) >> (8 * (k & 3) + 2 * quarter)) & 3);
    o[k] = d * static_cast<float>((nibble8(ql, k, sh) | (hi << 4)) - 32);
  }
}

template <TensorType T>
using TypeTag = std::integral_constant<TensorType, T>;

// Calls f(TypeTag<T>{}) for a runtime type; returns false for an unsupported type (every caller
// turns that into an Error naming the type). Must list exactly the types cuda_supports() names.
template <class F>
bool dispatch_type(TensorType t, F&& f) {
  switch (t) {
#define PIPELLM_CASE(T_)     \
  case TensorType::T_:       \
    f(TypeTag<TensorType::T_>{});            \
    return true;
    PIPELLM_CASE(F32)
    PIPELLM_CASE(F16)
    PIPELLM_CASE(BF16)
    PIPELLM_CASE(Q4_0)
    PIPELLM_CASE(Q4_1)
    PIPELLM_CASE(Q5_0)
    PIPELLM_CASE(Q5_1)
    PIPELLM_CASE(Q8_0)
    PIPELLM_CASE(Q2_K)
    PIPELLM_CASE(Q3_K)
    PIPELLM_CASE(Q4_K)
    PIPELLM_CASE(Q5_K)
    PIPELLM_CASE(Q6_K)
    PIPELLM_CASE(IQ4_NL)
    PIPELLM_CASE(IQ4_XS)
    PIPELLM_CASE(MXFP4)
#undef PIPELLM_CASE
    default:
      return false;
  }
}

}  // namespace pipellm::cuda

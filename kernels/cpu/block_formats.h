// On-disk block layouts of the GGUF quantized formats, as plain structs shared by the CPU
// kernels and (later) the CUDA kernels. No std:: and no constructors so the same header
// compiles under nvcc; fp16 scales are kept as raw uint16_t bits.
#pragma once
#include <stdint.h>

#if defined(__CUDACC__)
#define PIPELLM_HD __host__ __device__ __forceinline__
#else
#define PIPELLM_HD inline
#endif

namespace pipellm {

// Sub-block geometry: the legacy formats use 32-element blocks, the K-quants 256-element
// super-blocks split into 8 or 16 sub-blocks.
constexpr int kQK = 32;
constexpr int kQKK = 256;
constexpr int kKScaleBytes = 12;  // 8 packed 6-bit (scale, min) pairs of Q4_K/Q5_K

// ---- legacy 32-element blocks: x = d * q (+ m) ----

struct BlockQ4_0 {  // q in 0..15, x = d * (q - 8); element j in low nibble, j+16 in high
  uint16_t d;
  uint8_t qs[kQK / 2];
};

struct BlockQ4_1 {  // x = d * q + m
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};

struct BlockQ5_0 {  // 5th bit of element j is bit j of qh; x = d * (q - 16)
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

struct BlockQ5_1 {  // x = d * q + m
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

struct BlockQ8_0 {  // x = d * q
  uint16_t d;
  int8_t qs[kQK];
};

struct BlockIQ4_NL {  // x = d * kIQ4NLValues[q], nibble order as Q4_0
  uint16_t d;
  uint8_t qs[kQK / 2];
};

// OCP microscaling FP4: an E8M0 power-of-two scale byte, then 4-bit E2M1 codes (nibble order as
// Q4_0). x = kMXFP4Values[q] * 2^(e - 128): the table holds twice the E2M1 values, so the scale
// is half of E8M0's 2^(e - 127) (mxfp4_scale_bits). No padding: 17 bytes, byte-aligned fields.
struct BlockMXFP4 {
  uint8_t e;
  uint8_t qs[kQK / 2];
};

// ---- K-quants: 256-element super-blocks ----

// 16 sub-blocks of 16: 4-bit scale (low nibble) and 4-bit min (high nibble) per sub-block;
// 2-bit quants, 4 per byte. x = d * sc * q - dmin * m.
struct BlockQ2_K {
  uint8_t scales[kQKK / 16];
  uint8_t qs[kQKK / 4];
  uint16_t d;
  uint16_t dmin;
};

// 16 sub-blocks of 16 with signed 6-bit scales (stored + 32, packed into 12 bytes);
// 2 low bits in qs, the 3rd bit in hmask (a clear bit subtracts 4). x = d * (sc - 32) * q.
struct BlockQ3_K {
  uint8_t hmask[kQKK / 8];
  uint8_t qs[kQKK / 4];
  uint8_t scales[12];
  uint16_t d;
};

// 8 sub-blocks of 32 with 6-bit (scale, min) pairs; x = d * sc * q - dmin * m, q in 0..15.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQKK / 2];
};

// As Q4_K with a 5th bit per element in qh; q in 0..31.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};

// 16 sub-blocks of 16 with int8 scales; 6-bit quants (4 low bits in ql, 2 high in qh).
// x = d * sc * (q - 32).
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};

// 8 sub-blocks of 32 with 6-bit scales (low 4 bits in scales_l, high 2 in scales_h), stored
// + 32; values through the IQ4_NL table. x = d * (ls - 32) * kIQ4NLValues[q].
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQKK / 64];
  uint8_t qs[kQKK / 2];
};

static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block layout");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block layout");
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block layout");
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block layout");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block layout");
static_assert(sizeof(BlockIQ4_NL) == 18, "IQ4_NL block layout");
static_assert(sizeof(BlockMXFP4) == 17, "MXFP4 block layout");
static_assert(sizeof(BlockQ2_K) == 84, "Q2_K block layout");
static_assert(sizeof(BlockQ3_K) == 110, "Q3_K block layout");
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block layout");
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block layout");
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block layout");
static_assert(sizeof(BlockIQ4_XS) == 136, "IQ4_XS block layout");

// The non-linear 4-bit codebook of IQ4_NL / IQ4_XS (part of the format's definition).
constexpr int8_t kIQ4NLValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

// E2M1 codes times two, so every value is a small integer: bit 3 is the sign, bits 0..2 index the
// magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 (doubled). Code 8 is -0, which decodes to 0.
constexpr int8_t kMXFP4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// Float bits of an MXFP4 block's scale 2^(e - 128) (half the E8M0 value, matching the doubled
// table). e = 0 and 1 give the subnormals 2^-128 and 2^-127; e = 255 gives 2^127 (E8M0's NaN
// code is read as a number, as llama.cpp does). Returned as bits so host and device code can
// each reinterpret them without libm: every scale is an exact power of two.
PIPELLM_HD uint32_t mxfp4_scale_bits(uint8_t e) {
  return e < 2 ? (0x00200000u << e) : (static_cast<uint32_t>(e - 1) << 23);
}

// ---- scale unpacking shared by dequantizers and dot products ----

// Q4_K/Q5_K: sub-block j (0..7) of the 12 packed bytes -> 6-bit scale and min.
// Bytes 0..3 hold scales 0..3 (low 6 bits), bytes 4..7 mins 0..3; sub-blocks 4..7 keep their
// low 4 bits in bytes 8..11 and their top 2 bits in the spare top bits of bytes 0..7.
PIPELLM_HD void unpack_k4_scale_min(const uint8_t* q, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = static_cast<uint8_t>(q[j] & 63);
    *m = static_cast<uint8_t>(q[j + 4] & 63);
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q3_K: sub-block i (0..15) -> signed scale (already minus 32). Low 4 bits: byte i (i < 8) or
// the high nibble of byte i-8; top 2 bits: bits 2*(i/4).. of byte 8 + i%4.
PIPELLM_HD int q3k_scale(const uint8_t* s, int i) {
  const int lo = i < 8 ? (s[i] & 0xF) : (s[i - 8] >> 4);
  const int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
  return (lo | (hi << 4)) - 32;
}

// IQ4_XS: sub-block ib (0..7) -> signed scale (already minus 32).
PIPELLM_HD int iq4xs_scale(const BlockIQ4_XS& b, int ib) {
  const int lo = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
  const int hi = (b.scales_h >> (2 * ib)) & 3;
  return (lo | (hi << 4)) - 32;
}

}  // namespace pipellm

// Per-format pieces of the fast quantized mat-vec kernels (matvec_quant.cu): how a thread loads
// its share of one "item" of a weight row (Q4_K/Q5_K/Q6_K: a 256-element super-block, Q8_0/Q4_0/MXFP4:
// a 32-element block) with 16-byte loads, how it decodes those bytes into integer lanes, which
// 8-bit activations (act_q8.h) it pairs them with, and the scaled integer dot product (dp4a).
//
// Each format F provides:
//   kLanes        threads that share one item (each takes a fixed part of it: lane t)
//   kItem         elements per item
//   Raw           the loaded bytes of one (row, item, lane); load(WeightRef, row, item, t)
//   Dec           Raw decoded once, reused for every activation row; decode(Raw, t)
//   Act           the activations one (item, lane) needs; act(xq_row, xds_row, item, t)
//   dot(Dec, Act, t) -> float, the lane's part of the item's contribution to the output.
// Loads of weights never depend on earlier kernels (weights are constant), so the kernels issue
// the first ones before waiting on the preceding grid (PDL).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "base/tensor_type.h"
#include "kernels/cuda/dequant_device.cuh"

namespace pipellm::cuda::mv {

__device__ __forceinline__ int dp4(int a, int b, int c) { return __dp4a(a, b, c); }

__device__ __forceinline__ uint4 ld16(const uint8_t* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ int4 ld16s(const int8_t* p) { return *reinterpret_cast<const int4*>(p); }
__device__ __forceinline__ uint16_t ld2(const uint8_t* p) { return __ldg(reinterpret_cast<const unsigned short*>(p)); }

// One weight matrix of a launch: data in the device layout (weight_layout.h); nb blocks per row,
// NB blocks in the whole matrix (the repacked layouts index their arrays by NB).
struct WeightRef {
  const uint8_t* w;
  int64_t nb;
  int64_t NB;
};

__device__ __forceinline__ int sum16(int w0, int w1, int w2, int w3, const int4& a, int c) {
  return dp4(w3, a.w, dp4(w2, a.z, dp4(w1, a.y, dp4(w0, a.x, c))));
}

// ---- Q4_K (GGUF block layout, 144 bytes): 8 lanes per super-block, 16 bytes of quants each ----
// Lane t covers qs[16t..16t+15]: low nibbles are sub-block 2j (elements 64j + l0 .. +15), high
// nibbles sub-block 2j+1 (+32), j = t/2, l0 = 16*(t%2). Every lane also reads the block's first 16
// bytes (d, dmin, 12 bytes of 6-bit scales and mins): one broadcast transaction for the 8 lanes.
struct Q4K {
  static constexpr int kLanes = 8;
  static constexpr int kItem = 256;
  struct Raw {
    uint4 q, hd;
  };
  struct Dec {
    int lo[4], hi[4];
    float d, dmin;
    int sc_lo, sc_hi, m_lo, m_hi;
  };
  struct Act {
    int4 lo, hi;
    float2 dlo, dhi;
  };

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int t) {
    const uint8_t* blk = m.w + (row * m.nb + ib) * 144;
    return Raw{ld16(blk + 16 + 16 * t), ld16(blk)};
  }

  __device__ static int byte_of(uint32_t s0, uint32_t s1, uint32_t s2, int i) {
    const uint32_t w = i < 4 ? s0 : (i < 8 ? s1 : s2);
    return static_cast<int>((w >> (8 * (i & 3))) & 0xFF);
  }

  __device__ static void scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int j, int& sc, int& m) {
    if (j < 4) {
      sc = byte_of(s0, s1, s2, j) & 63;
      m = byte_of(s0, s1, s2, j + 4) & 63;
    } else {
      sc = (byte_of(s0, s1, s2, j + 4) & 0xF) | ((byte_of(s0, s1, s2, j - 4) >> 6) << 4);
      m = (byte_of(s0, s1, s2, j + 4) >> 4) | ((byte_of(s0, s1, s2, j) >> 6) << 4);
    }
  }

  // d, dmin and lane t's two scales and mins, from the block's first 16 bytes (Q5_K's too).
  __device__ static void header(const uint4& hd, int t, Dec& o) {
    const int j = t >> 1;
    const __half2 dm = *reinterpret_cast<const __half2*>(&hd.x);
    o.d = __low2float(dm);
    o.dmin = __high2float(dm);
    scale_min(hd.y, hd.z, hd.w, 2 * j, o.sc_lo, o.m_lo);
    scale_min(hd.y, hd.z, hd.w, 2 * j + 1, o.sc_hi, o.m_hi);
  }

  __device__ static Dec decode(const Raw& r, int t) {
    Dec o;
    header(r.hd, t, o);
    const uint32_t v[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o.lo[i] = static_cast<int>(v[i] & 0x0F0F0F0F);
      o.hi[i] = static_cast<int>((v[i] >> 4) & 0x0F0F0F0F);
    }
    return o;
  }

  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int t) {
    const int j = t >> 1, l0 = (t & 1) * 16;
    const int8_t* xa = xq + ib * 256 + 64 * j + l0;
    const float2* ds = xds + ib * 8 + 2 * j;
    return Act{ld16s(xa), ld16s(xa + 32), ds[0], ds[1]};
  }

  __device__ static float dot(const Dec& w, const Act& a, int t) {
    const int si_lo = sum16(w.lo[0], w.lo[1], w.lo[2], w.lo[3], a.lo, 0);
    const int si_hi = sum16(w.hi[0], w.hi[1], w.hi[2], w.hi[3], a.hi, 0);
    float r = w.d * (static_cast<float>(w.sc_lo) * a.dlo.x * static_cast<float>(si_lo) +
                     static_cast<float>(w.sc_hi) * a.dhi.x * static_cast<float>(si_hi));
    if ((t & 1) == 0) r -= w.dmin * (static_cast<float>(w.m_lo) * a.dlo.y + static_cast<float>(w.m_hi) * a.dhi.y);
    return r;
  }
};

// ---- Q5_K (GGUF block layout, 176 bytes: d, dmin, 12 bytes of scales, qh[32], qs[128]) ----
// As Q4_K, lane t covers qs[16t..16t+15] (chunk j = t/2 of 64 elements, l0 = 16*(t%2)), plus
// qh[l0..l0+15]: bit 2j of qh[l] is the fifth bit of element 64j + l, bit 2j+1 that of
// 64j + 32 + l. Quants 0..31, the same scales and mins as Q4_K.
struct Q5K {
  static constexpr int kLanes = 8;
  static constexpr int kItem = 256;
  using Dec = Q4K::Dec;
  using Act = Q4K::Act;
  struct Raw {
    uint4 q, qh, hd;
  };

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int t) {
    const uint8_t* blk = m.w + (row * m.nb + ib) * 176;
    return Raw{ld16(blk + 48 + 16 * t), ld16(blk + 16 + 16 * (t & 1)), ld16(blk)};
  }

  __device__ static Dec decode(const Raw& r, int t) {
    Dec o;
    Q4K::header(r.hd, t, o);
    const int j = t >> 1;
    const uint32_t v[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
    const uint32_t h[4] = {r.qh.x, r.qh.y, r.qh.z, r.qh.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o.lo[i] = static_cast<int>((v[i] & 0x0F0F0F0Fu) | (((h[i] >> (2 * j)) & 0x01010101u) << 4));
      o.hi[i] = static_cast<int>(((v[i] >> 4) & 0x0F0F0F0Fu) | (((h[i] >> (2 * j + 1)) & 0x01010101u) << 4));
    }
    return o;
  }

  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int t) { return Q4K::act(xq, xds, ib, t); }
  __device__ static float dot(const Dec& w, const Act& a, int t) { return Q4K::dot(w, a, t); }
};

// ---- Q6_K (repacked: ql, qh, scales, d arrays): 8 lanes per super-block ----
// Lane t: n = t/4 (half of 128), s = t%4; l0 = 16*(s&1); low nibbles are quarter q = s/2, high
// nibbles quarter q+2; element index 128n + 32*quarter + l0 + (0..15).
struct Q6K {
  static constexpr int kLanes = 8;
  static constexpr int kItem = 256;
  struct Raw {
    uint4 ql, qh;
    int sc_lo, sc_hi;
    uint16_t d;
  };
  struct Dec {
    int lo[4], hi[4];
    float d, sc_lo, sc_hi;
  };
  struct Act {
    int4 lo, hi;
    float dlo, dhi;
  };

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int t) {
    const int n = t >> 2, s = t & 3, l0 = (s & 1) * 16, q = s >> 1;
    const int64_t bi = row * m.nb + ib;
    Raw r;
    r.ql = ld16(m.w + bi * 128 + 64 * n + 32 * q + l0);
    r.qh = ld16(m.w + m.NB * 128 + bi * 64 + 32 * n + l0);
    const int8_t* scp = reinterpret_cast<const int8_t*>(m.w + m.NB * 192 + bi * 16 + 8 * n + (s & 1) + 2 * q);
    r.sc_lo = __ldg(scp);
    r.sc_hi = __ldg(scp + 4);
    r.d = ld2(m.w + m.NB * 208 + bi * 2);
    return r;
  }

  __device__ static Dec decode(const Raw& r, int t) {
    Dec o;
    const int q = (t & 3) >> 1;
    const int shl = 2 * q, shh = 2 * q + 4;
    const uint32_t qlv[4] = {r.ql.x, r.ql.y, r.ql.z, r.ql.w}, qhv[4] = {r.qh.x, r.qh.y, r.qh.z, r.qh.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o.lo[i] = static_cast<int>(__vsub4((qlv[i] & 0x0F0F0F0F) | (((qhv[i] >> shl) & 0x03030303) << 4), 0x20202020));
      o.hi[i] =
          static_cast<int>(__vsub4(((qlv[i] >> 4) & 0x0F0F0F0F) | (((qhv[i] >> shh) & 0x03030303) << 4), 0x20202020));
    }
    o.d = f16_bits(r.d);
    o.sc_lo = static_cast<float>(r.sc_lo);
    o.sc_hi = static_cast<float>(r.sc_hi);
    return o;
  }

  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int t) {
    const int n = t >> 2, s = t & 3, l0 = (s & 1) * 16, q = s >> 1;
    const int8_t* xa = xq + ib * 256 + 128 * n + 32 * q + l0;
    const float2* ds = xds + ib * 8 + 4 * n + q;
    return Act{ld16s(xa), ld16s(xa + 64), ds[0].x, ds[2].x};
  }

  __device__ static float dot(const Dec& w, const Act& a, int) {
    const int si_lo = sum16(w.lo[0], w.lo[1], w.lo[2], w.lo[3], a.lo, 0);
    const int si_hi = sum16(w.hi[0], w.hi[1], w.hi[2], w.hi[3], a.hi, 0);
    return w.d * (w.sc_lo * a.dlo * static_cast<float>(si_lo) + w.sc_hi * a.dhi * static_cast<float>(si_hi));
  }
};

// ---- Q8_0 (repacked: qs, d arrays): 2 lanes per 32-block, 16 quants each ----
struct Q80 {
  static constexpr int kLanes = 2;
  static constexpr int kItem = 32;
  struct Raw {
    uint4 q;
    uint16_t d;
  };
  struct Dec {
    int q[4];
    float d;
  };
  struct Act {
    int4 a;
    float d;
  };

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int t) {
    const int64_t bi = row * m.nb + ib;
    return Raw{ld16(m.w + bi * 32 + 16 * t), ld2(m.w + m.NB * 32 + bi * 2)};
  }
  __device__ static Dec decode(const Raw& r, int) {
    return Dec{{static_cast<int>(r.q.x), static_cast<int>(r.q.y), static_cast<int>(r.q.z), static_cast<int>(r.q.w)},
               f16_bits(r.d)};
  }
  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int t) {
    return Act{ld16s(xq + ib * 32 + 16 * t), xds[ib].x};
  }
  __device__ static float dot(const Dec& w, const Act& a, int) {
    const int si = sum16(w.q[0], w.q[1], w.q[2], w.q[3], a.a, 0);
    return w.d * a.d * static_cast<float>(si);
  }
};

// Formats whose 32-element parts hold 4-bit codes that decode, through the format's values4
// (Q4_0: code - 8; MXFP4, IQ4_XS: a codebook), into signed-byte lo/hi words (elements 4i.. of
// each half) with one scale, and their dot product with the 8-bit activations of the same 32
// elements.
struct Codes32 {
  struct Dec {
    int lo[4], hi[4];
    float d;
  };
  struct Act {
    int4 lo, hi;
    float d;
  };
  // The 16 code bytes v[0..3] (low nibbles: elements 0..15, high: 16..31) through the format's
  // F::values4.
  template <class F>
  __device__ static void codes(const uint32_t (&v)[4], Dec& o) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o.lo[i] = F::values4(v[i] & 0x0F0F0F0Fu);
      o.hi[i] = F::values4((v[i] >> 4) & 0x0F0F0F0Fu);
    }
  }
  // The activations of 32-block ib, for the formats with one lane per block.
  __device__ static Act block_act(const int8_t* xq, const float2* xds, int64_t ib) {
    return Act{ld16s(xq + ib * 32), ld16s(xq + ib * 32 + 16), xds[ib].x};
  }
  __device__ static float dot(const Dec& w, const Act& a, int) {
    int si = sum16(w.lo[0], w.lo[1], w.lo[2], w.lo[3], a.lo, 0);
    si = sum16(w.hi[0], w.hi[1], w.hi[2], w.hi[3], a.hi, si);
    return w.d * a.d * static_cast<float>(si);
  }
};

// ---- Q4_0 (repacked: qs, d arrays): one lane per 32-block ----
struct Q40 : Codes32 {
  static constexpr int kLanes = 1;
  static constexpr int kItem = 32;
  struct Raw {
    uint4 q;
    uint16_t d;
  };

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int) {
    const int64_t bi = row * m.nb + ib;
    return Raw{ld16(m.w + bi * 16), ld2(m.w + m.NB * 16 + bi * 2)};
  }
  // Four codes (one per byte) -> their values code - 8 as signed bytes.
  __device__ static int values4(uint32_t codes) { return static_cast<int>(__vsub4(codes, 0x08080808u)); }
  __device__ static Dec decode(const Raw& r, int) {
    Dec o;
    codes<Q40>({r.q.x, r.q.y, r.q.z, r.q.w}, o);
    o.d = f16_bits(r.d);
    return o;
  }
  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int) { return block_act(xq, xds, ib); }
};

// __byte_perm's selector picking, for four codes (one per byte), the bytes codes & 7 of its two
// words: the low 3 bits of each code as its 4-bit selector (bit 3 of a selector would ask for
// sign replication, so it stays out).
__device__ __forceinline__ uint32_t perm_selectors(uint32_t codes) {
  const uint32_t m = codes & 0x07070707u;
  const uint32_t packed = m | (m >> 4);  // selectors of bytes 0, 1 in bits 0..7; of 2, 3 in 16..23
  return (packed & 0xFFu) | ((packed >> 8) & 0xFF00u);
}

// ---- MXFP4 (repacked: qs, e arrays): one lane per 32-block, as Q4_0 ----
// The nibbles are codes of the doubled E2M1 table (kMXFP4Values), mapped to signed bytes four at
// a time with a byte permute; the block scale 2^(e - 128) multiplies the integer sum.
struct MXFP4 : Codes32 {
  static constexpr int kLanes = 1;
  static constexpr int kItem = 32;
  struct Raw {
    uint4 q;
    uint8_t e;
  };

  // Four codes (one per byte, each 0..15) -> their four table values as signed bytes. The
  // magnitudes 0, 1, 2, 3 | 4, 6, 8, 12 of codes & 7 are the bytes of two words, picked by
  // __byte_perm (perm_selectors); bit 3 of a code negates its byte.
  __device__ static int values4(uint32_t codes) {
    const uint32_t mag = __byte_perm(0x03020100u, 0x0C080604u, perm_selectors(codes));
    const uint32_t neg = ((codes >> 3) & 0x01010101u) * 0xFFu;  // 0xFF in the bytes to negate
    return static_cast<int>(__vsub4(mag ^ neg, neg));         // per byte: (~m) - (-1) = -m
  }

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int) {
    const int64_t bi = row * m.nb + ib;
    return Raw{ld16(m.w + bi * 16), __ldg(m.w + m.NB * 16 + bi)};
  }
  __device__ static Dec decode(const Raw& r, int) {
    Dec o;
    codes<MXFP4>({r.q.x, r.q.y, r.q.z, r.q.w}, o);
    o.d = mxfp4_scale(r.e);
    return o;
  }
  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int) { return block_act(xq, xds, ib); }
};

// ---- IQ4_XS (GGUF block layout, 136 bytes: d, scales_h, scales_l[4], qs[128]): 8 lanes per
// super-block, lane t one sub-block of 32 ----
// Lane t reads qs[16t..16t+15] (low nibbles: elements 32t..32t+15, high: +16) with two 8-byte
// loads (blocks are 8-byte aligned, not 16) and the block's first 8 bytes for its 6-bit scale
// ls = scales_l nibble | 2 bits of scales_h; values from the IQ4_NL codebook, scaled d (ls - 32).
struct IQ4XS : Codes32 {
  static constexpr int kLanes = 8;
  static constexpr int kItem = 256;
  struct Raw {
    uint2 q0, q1, hd;
  };

  // Four codes (one per byte, 0..15) -> their IQ4_NL values as signed bytes: entries 0..7 and
  // 8..15 of the codebook are two word pairs, each picked by __byte_perm; bit 3 chooses the pair.
  __device__ static int values4(uint32_t codes) {
    const uint32_t sel = perm_selectors(codes);
    const uint32_t lo = __byte_perm(0xBFAD9881u, 0xF6EADDCFu, sel);  // -127 -104 -83 -65 | -49 -35 -22 -10
    const uint32_t hi = __byte_perm(0x26190D01u, 0x71594535u, sel);  // 1 13 25 38 | 53 69 89 113
    const uint32_t pick = ((codes >> 3) & 0x01010101u) * 0xFFu;
    return static_cast<int>((lo & ~pick) | (hi & pick));
  }

  __device__ static uint2 ld8(const uint8_t* p) { return __ldg(reinterpret_cast<const uint2*>(p)); }

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int t) {
    const uint8_t* blk = m.w + (row * m.nb + ib) * 136;
    return Raw{ld8(blk + 8 + 16 * t), ld8(blk + 16 + 16 * t), ld8(blk)};
  }
  __device__ static Dec decode(const Raw& r, int t) {
    Dec o;
    const uint32_t scales_h = r.hd.x >> 16, scales_l = r.hd.y;
    const int ls = static_cast<int>(((scales_l >> (4 * t)) & 0xFu) | (((scales_h >> (2 * t)) & 3u) << 4));
    o.d = f16_bits(static_cast<uint16_t>(r.hd.x & 0xFFFFu)) * static_cast<float>(ls - 32);
    codes<IQ4XS>({r.q0.x, r.q0.y, r.q1.x, r.q1.y}, o);
    return o;
  }
  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int t) {
    const int8_t* xa = xq + ib * 256 + 32 * t;
    return Act{ld16s(xa), ld16s(xa + 16), xds[ib * 8 + t].x};
  }
};

// ---- 32-element blocks kept in their GGUF layout (Q4_1, Q5_0, Q5_1, IQ4_NL): one lane per
// block; their 18-24 byte blocks are only 2-, 4- or 8-byte aligned, so the loads are that wide.
// Nibble j of qs is element j (low) and j + 16 (high); Q5's fifth bits are bit j of qh.

__device__ __forceinline__ uint32_t ld4(const uint8_t* p) { return __ldg(reinterpret_cast<const uint32_t*>(p)); }
__device__ __forceinline__ uint32_t ld4_from2(const uint8_t* p) { return ld2(p) | (static_cast<uint32_t>(ld2(p + 2)) << 16); }

// Bits 0..3 of `nib` to bit 4 of bytes 0..3 (the fifth bits of four consecutive elements).
__device__ __forceinline__ uint32_t spread_bit4(uint32_t nib) { return ((nib * 0x00204081u) & 0x01010101u) << 4; }

// Activations of one 32-block: its two halves and (d, d * sum q).
struct Act32 {
  int4 lo, hi;
  float2 ds;
  __device__ static Act32 of(const int8_t* xq, const float2* xds, int64_t ib) {
    return Act32{ld16s(xq + ib * 32), ld16s(xq + ib * 32 + 16), xds[ib]};
  }
};

// The 16 quant bytes as words: elements 4i..4i+3 in lo[i] (low nibbles), 16 + 4i.. in hi[i], each
// with its fifth bit from qh where the format has one (qh 0: none).
struct Dec32 {
  int lo[4], hi[4];
  float d, m;
  __device__ void set(const uint32_t (&q)[4], uint32_t qh) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      lo[i] = static_cast<int>((q[i] & 0x0F0F0F0Fu) | spread_bit4((qh >> (4 * i)) & 0xFu));
      hi[i] = static_cast<int>(((q[i] >> 4) & 0x0F0F0F0Fu) | spread_bit4((qh >> (16 + 4 * i)) & 0xFu));
    }
  }
  __device__ int sum(const Act32& a) const {
    return sum16(hi[0], hi[1], hi[2], hi[3], a.hi, sum16(lo[0], lo[1], lo[2], lo[3], a.lo, 0));
  }
};

// What the 32-element formats share: one lane per block, and w = d q + m against the rounded
// activations: d d_x sum(q x) + m d_x sum(x) (m: Q4_1/Q5_1's minimum, -16 d for Q5_0, 0 for IQ4_NL).
struct Block32 {
  static constexpr int kLanes = 1;
  static constexpr int kItem = 32;
  using Dec = Dec32;
  using Act = Act32;
  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int) { return Act32::of(xq, xds, ib); }
  __device__ static float dot(const Dec& w, const Act& a, int) {
    return w.d * a.ds.x * static_cast<float>(w.sum(a)) + w.m * a.ds.y;
  }
  // Quants with their fifth bits (qh 0: none), scaled by d and offset by m, both from one word.
  __device__ static Dec with_min(const uint32_t (&q)[4], uint32_t qh, uint32_t dm) {
    Dec o;
    o.set(q, qh);
    o.d = f16_bits(static_cast<uint16_t>(dm & 0xFFFFu));
    o.m = f16_bits(static_cast<uint16_t>(dm >> 16));
    return o;
  }
};

// Q4_1 (20 bytes: d, m, qs[16]; 4-byte aligned): w = d q + m.
struct Q41 : Block32 {
  struct Raw {
    uint32_t dm, q[4];
  };
  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int) {
    const uint8_t* b = m.w + (row * m.nb + ib) * 20;
    return Raw{ld4(b), {ld4(b + 4), ld4(b + 8), ld4(b + 12), ld4(b + 16)}};
  }
  __device__ static Dec decode(const Raw& r, int) { return with_min(r.q, 0, r.dm); }
};

// Q5_1 (24 bytes: d, m, qh, qs[16]; 8-byte aligned): w = d q + m, q of 5 bits.
struct Q51 : Block32 {
  struct Raw {
    uint32_t dm, qh, q[4];
  };
  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int) {
    const uint8_t* b = m.w + (row * m.nb + ib) * 24;
    return Raw{ld4(b), ld4(b + 4), {ld4(b + 8), ld4(b + 12), ld4(b + 16), ld4(b + 20)}};
  }
  __device__ static Dec decode(const Raw& r, int) { return with_min(r.q, r.qh, r.dm); }
};

// Q5_0 (22 bytes: d, qh, qs[16]; 2-byte aligned): w = d (q - 16), q of 5 bits.
struct Q50 : Block32 {
  struct Raw {
    uint16_t d;
    uint32_t qh, q[4];
  };
  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int) {
    const uint8_t* b = m.w + (row * m.nb + ib) * 22;
    return Raw{ld2(b), ld4_from2(b + 2), {ld4_from2(b + 6), ld4_from2(b + 10), ld4_from2(b + 14), ld4_from2(b + 18)}};
  }
  __device__ static Dec decode(const Raw& r, int) {
    Dec o;
    o.set(r.q, r.qh);
    o.d = f16_bits(r.d);
    o.m = -16.0f * o.d;
    return o;
  }
};

// IQ4_NL (18 bytes: d, qs[16]; 2-byte aligned): w = d * codebook[q] (IQ4XS::values4).
struct IQ4NL : Block32 {
  struct Raw {
    uint16_t d;
    uint32_t q[4];
  };
  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int) {
    const uint8_t* b = m.w + (row * m.nb + ib) * 18;
    return Raw{ld2(b), {ld4_from2(b + 2), ld4_from2(b + 6), ld4_from2(b + 10), ld4_from2(b + 14)}};
  }
  __device__ static Dec decode(const Raw& r, int) {
    Dec o;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o.lo[i] = IQ4XS::values4(r.q[i] & 0x0F0F0F0Fu);
      o.hi[i] = IQ4XS::values4((r.q[i] >> 4) & 0x0F0F0F0Fu);
    }
    o.d = f16_bits(r.d);
    o.m = 0.0f;
    return o;
  }
};

// ---- Q2_K (GGUF layout, 84 bytes: scales[16], qs[64], d, dmin; 4-byte aligned): 8 lanes per
// super-block, lane t one run of 32 elements ----
// Element 128h + 32j + l (l < 32) is bits 2j..2j+1 of qs[32h + l], with the scale/min byte
// scales[8h + 2j + l / 16] (low nibble: scale, high: minimum): lane t takes h = t / 4, j = t % 4.
// Minimums are per 16 elements, so the activations' sums are taken per 16 (dp4a with ones).
struct Q2K {
  static constexpr int kLanes = 8;
  static constexpr int kItem = 256;
  struct Raw {
    uint32_t q[8], sc, dm;
  };
  struct Dec {
    int lo[4], hi[4];
    float d_lo, d_hi, m_lo, m_hi;
  };
  struct Act {
    int4 lo, hi;
    float d;
    int s_lo, s_hi;  // sums of the two 16-element halves' 8-bit values
  };

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int t) {
    const uint8_t* b = m.w + (row * m.nb + ib) * 84;
    const int h = t >> 2, j = t & 3;
    Raw r;
#pragma unroll
    for (int i = 0; i < 8; ++i) r.q[i] = ld4(b + 16 + 32 * h + 4 * i);
    r.sc = ld4(b + ((8 * h + 2 * j) & ~3));
    r.dm = ld4(b + 80);
    return r;
  }
  __device__ static Dec decode(const Raw& r, int t) {
    Dec o;
    const int j = t & 3;
    const uint32_t sc2 = r.sc >> (8 * ((2 * j) & 2));  // the run's two scale bytes in bits 0..15
    const float d = f16_bits(static_cast<uint16_t>(r.dm & 0xFFFFu)), dmin = f16_bits(static_cast<uint16_t>(r.dm >> 16));
    o.d_lo = d * static_cast<float>(sc2 & 0xF);
    o.m_lo = dmin * static_cast<float>((sc2 >> 4) & 0xF);
    o.d_hi = d * static_cast<float>((sc2 >> 8) & 0xF);
    o.m_hi = dmin * static_cast<float>((sc2 >> 12) & 0xF);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      o.lo[i] = static_cast<int>((r.q[i] >> (2 * j)) & 0x03030303u);
      o.hi[i] = static_cast<int>((r.q[4 + i] >> (2 * j)) & 0x03030303u);
    }
    return o;
  }
  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int t) {
    const int8_t* xa = xq + ib * 256 + 32 * t;  // 128h + 32j = 32t
    Act a{ld16s(xa), ld16s(xa + 16), xds[ib * 8 + t].x, 0, 0};
    a.s_lo = sum16(0x01010101, 0x01010101, 0x01010101, 0x01010101, a.lo, 0);
    a.s_hi = sum16(0x01010101, 0x01010101, 0x01010101, 0x01010101, a.hi, 0);
    return a;
  }
  __device__ static float dot(const Dec& w, const Act& a, int) {
    const int si_lo = sum16(w.lo[0], w.lo[1], w.lo[2], w.lo[3], a.lo, 0);
    const int si_hi = sum16(w.hi[0], w.hi[1], w.hi[2], w.hi[3], a.hi, 0);
    return a.d * (w.d_lo * static_cast<float>(si_lo) + w.d_hi * static_cast<float>(si_hi) -
                  w.m_lo * static_cast<float>(a.s_lo) - w.m_hi * static_cast<float>(a.s_hi));
  }
};

// ---- Q3_K (GGUF layout, 110 bytes: hmask[32], qs[64], scales[12], d; 2-byte aligned): 8 lanes
// per super-block, lane t one run of 32 elements ----
// Element 128n + 32j + l is bits 2j..2j+1 of qs[32n + l] plus 4 * bit (4n + j) of hmask[l], minus
// 4; the 16-element sub-blocks 8n + 2j and +1 have 6-bit signed scales (q3k_scale).
struct Q3K {
  static constexpr int kLanes = 8;
  static constexpr int kItem = 256;
  struct Raw {
    uint32_t hm[8], q[8], sc[3];
    uint16_t d;
  };
  struct Dec {
    int lo[4], hi[4];
    float d_lo, d_hi;
  };
  using Act = IQ4XS::Act;

  __device__ static Raw load(const WeightRef& m, int64_t row, int64_t ib, int t) {
    const uint8_t* b = m.w + (row * m.nb + ib) * 110;
    const int n = t >> 2;
    Raw r;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      r.hm[i] = ld4_from2(b + 4 * i);
      r.q[i] = ld4_from2(b + 32 + 32 * n + 4 * i);
    }
#pragma unroll
    for (int i = 0; i < 3; ++i) r.sc[i] = ld4_from2(b + 96 + 4 * i);
    r.d = ld2(b + 108);
    return r;
  }
  // q3k_scale (kernels/cpu/block_formats.h) on the 12 scale bytes held in three words: byte k by
  // shifts, so nothing goes to local memory.
  __device__ static int scale(const uint32_t (&w)[3], int i) {
    const auto byte = [&](int k) {
      return static_cast<int>(((k < 4 ? w[0] : (k < 8 ? w[1] : w[2])) >> (8 * (k & 3))) & 0xFFu);
    };
    const int lo = i < 8 ? (byte(i) & 0xF) : (byte(i - 8) >> 4);
    const int hi = (byte(8 + (i & 3)) >> (2 * (i >> 2))) & 3;
    return (lo | (hi << 4)) - 32;
  }

  __device__ static Dec decode(const Raw& r, int t) {
    Dec o;
    const int n = t >> 2, j = t & 3, shift = 4 * n + j;
    const float d = f16_bits(r.d);
    o.d_lo = d * static_cast<float>(scale(r.sc, 8 * n + 2 * j));
    o.d_hi = d * static_cast<float>(scale(r.sc, 8 * n + 2 * j + 1));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t vl = ((r.q[i] >> (2 * j)) & 0x03030303u) | (((r.hm[i] >> shift) & 0x01010101u) << 2);
      const uint32_t vh = ((r.q[4 + i] >> (2 * j)) & 0x03030303u) | (((r.hm[4 + i] >> shift) & 0x01010101u) << 2);
      o.lo[i] = static_cast<int>(__vsub4(vl, 0x04040404u));
      o.hi[i] = static_cast<int>(__vsub4(vh, 0x04040404u));
    }
    return o;
  }
  __device__ static Act act(const int8_t* xq, const float2* xds, int64_t ib, int t) { return IQ4XS::act(xq, xds, ib, t); }
  __device__ static float dot(const Dec& w, const Act& a, int) {
    const int si_lo = sum16(w.lo[0], w.lo[1], w.lo[2], w.lo[3], a.lo, 0);
    const int si_hi = sum16(w.hi[0], w.hi[1], w.hi[2], w.hi[3], a.hi, 0);
    return a.d * (w.d_lo * static_cast<float>(si_lo) + w.d_hi * static_cast<float>(si_hi));
  }
};

// The one table from tensor type to format: calls f(Format{}) for a type with an 8-bit kernel and
// returns true, else returns false without calling it (the dense and expert mat-vecs both use it).
template <class Fn>
bool with_format(TensorType t, Fn&& f) {
  switch (t) {
    case TensorType::Q4_0: f(Q40{}); return true;
    case TensorType::Q4_1: f(Q41{}); return true;
    case TensorType::Q5_0: f(Q50{}); return true;
    case TensorType::Q5_1: f(Q51{}); return true;
    case TensorType::Q8_0: f(Q80{}); return true;
    case TensorType::Q2_K: f(Q2K{}); return true;
    case TensorType::Q3_K: f(Q3K{}); return true;
    case TensorType::Q4_K: f(Q4K{}); return true;
    case TensorType::Q5_K: f(Q5K{}); return true;
    case TensorType::Q6_K: f(Q6K{}); return true;
    case TensorType::MXFP4: f(MXFP4{}); return true;
    case TensorType::IQ4_NL: f(IQ4NL{}); return true;
    case TensorType::IQ4_XS: f(IQ4XS{}); return true;
    default: return false;
  }
}

}  // namespace pipellm::cuda::mv

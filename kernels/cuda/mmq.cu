#include "kernels/cuda/mmq.h"

#include <cooperative_groups.h>
#include <cuda_fp16.h>

#include <string>
#include <type_traits>

#include "base/error.h"
#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/matvec_formats.cuh"

namespace pipellm::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kTileRows = 64;       // weight rows per block: 4 warps x 16
constexpr int kThreads = 128;
constexpr int kK = 256;             // K per pipeline stage
constexpr int kXRow = kK + 16;      // bytes per activation row in shared memory (pad: no bank conflicts)
constexpr int kMaxCluster = 8;
constexpr int kMaxGroupedExperts = 4096;
constexpr int kMaxSegments = 1 + kMmqMaxExtra;

struct Params {
  const uint8_t* w;
  int64_t nb;    // blocks per weight row
  int64_t NB;    // blocks of the whole matrix (the repacked layouts index their arrays by it)
  int64_t n_in, n_out;
  int T;
  const int8_t* xq;
  const float2* xds;
  const __half* xh;  // the f16 variant's activations [T][n_in]
  float* y;
  int64_t ys;
  bool add;
  // Dense products of several matrices (MmqArgs::extra): their 64-row tiles follow each other
  // along grid x, segment i's from tile0; a block takes its segment's w, NB, n_out, y and ys.
  struct Segment {
    const uint8_t* w;
    int64_t NB, n_out;
    float* y;
    int64_t ys, tile0;
  };
  Segment seg[kMaxSegments];
  int n_seg = 1;
  // Experts (mmq_experts): each block's tile of pairs of one expert; the expert's bytes start at
  // w + expert * expert_bytes (NB: one expert's blocks); a pair's activation row is pair / x_group.
  const int4* tiles = nullptr;
  const int32_t* n_tiles = nullptr;
  const int32_t* order = nullptr;
  int64_t expert_bytes = 0;
  int x_group = 1;
};

__device__ __forceinline__ uint32_t ld32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ float half_at(const uint8_t* p) { return __half2float(*reinterpret_cast<const __half*>(p)); }

// An mma's int32 sum (|c| < 2^22: 32 products of 8-bit values) as float without the
// quarter-rate I2F: the integer lands in the mantissa of 1.5 * 2^23.
__device__ __forceinline__ float i2f(int c) { return __int_as_float(c + 0x4B400000) - 12582912.0f; }

// ---- formats: the raw bytes of one 256-wide K step of a row in shared memory, and their
// decoding into mma fragments ----
//
// kRow bytes per row (16-byte chunks at the offsets copy() writes), kExtra bytes per row of a
// second per-row array (scales), kSub the values per scale (the mma's K: 32, or 16 for Q6_K),
// kChunksPerBlock for the formats of 32-value blocks (their rows may end inside a K step: n_in a
// multiple of 32 only, e.g. gpt-oss's 2880), 0 for the K-quants (a K step is one 256-value block).
// frag(row, extra, kbi, j, tig, lo, hi, scale, min): the thread's two 4-value words of sub-step j
// (values 4 tig.. and 16 + 4 tig.. for kSub 32; only lo for 16), their scale and minimum.

template <TensorType TT>
struct Fmt;

template <>
struct Fmt<TensorType::Q4_K> {  // GGUF blocks of 144 bytes: d, dmin, 12 bytes of 6-bit scales/mins, 128 of nibbles
  static constexpr int kRow = 144, kChunks = 9, kExtra = 0, kSub = 32, kChunksPerBlock = 0;
  static constexpr bool kMin = true;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    return p.w + (row * p.nb + kc) * 144 + 16 * c;
  }
  __device__ static void copy_extra(const Params&, int64_t, int64_t, uint8_t*) {}
  __device__ static void frag(const uint8_t* r, const uint8_t*, int64_t, int j, int tig, int& lo, int& hi, float& sc,
                              float& mn) {
    quants(r, j, tig, lo, hi);
    scale_min(r, j, sc, mn);
  }
  __device__ static void quants(const uint8_t* r, int j, int tig, int& lo, int& hi) {
    const uint8_t* q = r + 16 + 32 * (j >> 1);
    const int sh = (j & 1) * 4;
    lo = static_cast<int>((ld32(q + 4 * tig) >> sh) & 0x0F0F0F0Fu);
    hi = static_cast<int>((ld32(q + 16 + 4 * tig) >> sh) & 0x0F0F0F0Fu);
  }
  // Sub-block j's scale and minimum from the block's first 16 bytes (Q5_K's header too).
  __device__ static void scale_min(const uint8_t* r, int j, float& sc, float& mn) {
    const uint8_t* s = r + 4;
    int scv, mv;
    if (j < 4) {
      scv = s[j] & 63;
      mv = s[j + 4] & 63;
    } else {
      scv = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
      mv = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    const float2 dd = __half22float2(*reinterpret_cast<const __half2*>(r));
    sc = dd.x * static_cast<float>(scv);
    mn = dd.y * static_cast<float>(mv);
  }
};

template <>
struct Fmt<TensorType::Q5_K> {  // GGUF blocks of 176 bytes: d, dmin, 12 bytes of scales/mins, 32 of high bits, 128 of nibbles
  static constexpr int kRow = 176, kChunks = 11, kExtra = 0, kSub = 32, kChunksPerBlock = 0;
  static constexpr bool kMin = true;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    return p.w + (row * p.nb + kc) * 176 + 16 * c;
  }
  __device__ static void copy_extra(const Params&, int64_t, int64_t, uint8_t*) {}
  // As Q4_K's, with the fifth bit of element l of sub-block j in bit j of qh[l] (l < 32).
  __device__ static void frag(const uint8_t* r, const uint8_t*, int64_t, int j, int tig, int& lo, int& hi, float& sc,
                              float& mn) {
    quants(r, j, tig, lo, hi);
    scale_min(r, j, sc, mn);
  }
  __device__ static void quants(const uint8_t* r, int j, int tig, int& lo, int& hi) {
    const uint8_t* q = r + 48 + 32 * (j >> 1);
    const int sh = (j & 1) * 4;
    lo = static_cast<int>(((ld32(q + 4 * tig) >> sh) & 0x0F0F0F0Fu) | (((ld32(r + 16 + 4 * tig) >> j) & 0x01010101u) << 4));
    hi = static_cast<int>(((ld32(q + 16 + 4 * tig) >> sh) & 0x0F0F0F0Fu) |
                          (((ld32(r + 32 + 4 * tig) >> j) & 0x01010101u) << 4));
  }
  __device__ static void scale_min(const uint8_t* r, int j, float& sc, float& mn) {
    Fmt<TensorType::Q4_K>::scale_min(r, j, sc, mn);
  }
};

// The 8 per-block scales (S: 2-byte f16 bits or E8M0 bytes) of a K step of a row whose block count is
// no multiple of 8: not aligned for an asynchronous copy, and past the row's last block at its end.
// Plain loads, zeros past the end (a zero scale times zero values: never a NaN).
template <typename S>
__device__ void copy_scales_unaligned(const S* src, int64_t left, uint8_t* dst) {
  S* d = reinterpret_cast<S*>(dst);
#pragma unroll
  for (int b = 0; b < 8; ++b) d[b] = b < left ? src[b] : S{0};
}

template <>
struct Fmt<TensorType::Q8_0> {  // repacked: [NB][32] int8, then [NB] f16 scales
  static constexpr int kRow = 272, kChunks = 16, kExtra = 16, kSub = 32, kChunksPerBlock = 2;
  static constexpr bool kMin = false;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    return p.w + (row * p.nb + kc * 8) * 32 + 16 * c;
  }
  __device__ static void copy_extra(const Params& p, int64_t row, int64_t kc, uint8_t* dst) {
    const uint8_t* s = p.w + p.NB * 32 + (row * p.nb + kc * 8) * 2;
    if (p.nb % 8 == 0) cp16(dst, s, true);
    else copy_scales_unaligned(reinterpret_cast<const uint16_t*>(s), p.nb - kc * 8, dst);
  }
  __device__ static void frag(const uint8_t* r, const uint8_t* e, int64_t, int j, int tig, int& lo, int& hi, float& sc,
                              float& mn) {
    lo = static_cast<int>(ld32(r + 32 * j + 4 * tig));
    hi = static_cast<int>(ld32(r + 32 * j + 16 + 4 * tig));
    sc = half_at(e + 2 * j);
    mn = 0.0f;
  }
};

template <>
struct Fmt<TensorType::Q4_0> {  // repacked: [NB][16] nibbles (value j < 16 low, else high of byte j - 16), [NB] f16
  static constexpr int kRow = 144, kChunks = 8, kExtra = 16, kSub = 32, kChunksPerBlock = 1;
  static constexpr bool kMin = false;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    return p.w + (row * p.nb + kc * 8) * 16 + 16 * c;
  }
  __device__ static void copy_extra(const Params& p, int64_t row, int64_t kc, uint8_t* dst) {
    const uint8_t* s = p.w + p.NB * 16 + (row * p.nb + kc * 8) * 2;
    if (p.nb % 8 == 0) cp16(dst, s, true);
    else copy_scales_unaligned(reinterpret_cast<const uint16_t*>(s), p.nb - kc * 8, dst);
  }
  __device__ static void frag(const uint8_t* r, const uint8_t* e, int64_t, int j, int tig, int& lo, int& hi, float& sc,
                              float& mn) {
    const uint32_t v = ld32(r + 16 * j + 4 * tig);
    lo = static_cast<int>(__vsub4(v & 0x0F0F0F0Fu, 0x08080808u));
    hi = static_cast<int>(__vsub4((v >> 4) & 0x0F0F0F0Fu, 0x08080808u));
    sc = half_at(e + 2 * j);
    mn = 0.0f;
  }
};

// MXFP4 (repacked as Q4_0's nibbles, then [NB] E8M0 scale bytes): codes of the doubled E2M1
// table as signed bytes (the mat-vec's values4), the scale 2^(e - 128) per block.
template <>
struct Fmt<TensorType::MXFP4> {
  static constexpr int kRow = 144, kChunks = 8, kExtra = 8, kSub = 32, kChunksPerBlock = 1;
  static constexpr bool kMin = false;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    return p.w + (row * p.nb + kc * 8) * 16 + 16 * c;
  }
  __device__ static void copy_extra(const Params& p, int64_t row, int64_t kc, uint8_t* dst) {
    const uint8_t* s = p.w + p.NB * 16 + row * p.nb + kc * 8;
    if (p.nb % 8 == 0) cp8(dst, s, true);  // 8-byte aligned
    else copy_scales_unaligned(s, p.nb - kc * 8, dst);
  }
  __device__ static void frag(const uint8_t* r, const uint8_t* e, int64_t, int j, int tig, int& lo, int& hi, float& sc,
                              float& mn) {
    const uint32_t v = ld32(r + 16 * j + 4 * tig);
    lo = mv::MXFP4::values4(v & 0x0F0F0F0Fu);
    hi = mv::MXFP4::values4((v >> 4) & 0x0F0F0F0Fu);
    sc = mxfp4_scale(e[j]);
    mn = 0.0f;
  }
};

// Q6_K (repacked: ql [NB][128], qh [NB][64], scales [NB][16] int8, d [NB] f16). Value
// 128 n + 32 qq + l is (4 bits of ql[64 n + l + 32 (qq & 1)], low for qq < 2, high else) |
// (2 bits of qh[32 n + l] at 2 qq) << 4, minus 32; its scale index is value / 16. The row's d
// comes as the aligned 4-byte word holding it (kbi: the block index, whose parity picks the half;
// mmq_supports asks for an even block count so that word never passes the tensor's end).
template <>
struct Fmt<TensorType::Q6_K> {
  static constexpr int kRow = 208, kChunks = 13, kExtra = 4, kSub = 16, kChunksPerBlock = 0;
  static constexpr bool kMin = false;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    const int64_t bi = row * p.nb + kc;
    if (c < 8) return p.w + bi * 128 + 16 * c;
    if (c < 12) return p.w + p.NB * 128 + bi * 64 + 16 * (c - 8);
    return p.w + p.NB * 192 + bi * 16;
  }
  __device__ static void copy_extra(const Params& p, int64_t row, int64_t kc, uint8_t* dst) {
    const int64_t bi = row * p.nb + kc;
    cp4(dst, p.w + p.NB * 208 + ((bi * 2) & ~int64_t{3}));
  }
  __device__ static void frag(const uint8_t* r, const uint8_t* e, int64_t kbi, int s, int tig, int& lo, int&, float& sc,
                              float& mn) {
    const int n = s >> 3, qq = (s >> 1) & 3, l = 16 * (s & 1) + 4 * tig;
    const uint32_t a = ld32(r + 64 * n + 32 * (qq & 1) + l);
    const uint32_t h = ld32(r + 128 + 32 * n + l);
    const uint32_t nib = (qq < 2 ? a : a >> 4) & 0x0F0F0F0Fu;
    lo = static_cast<int>(__vsub4(nib | (((h >> (2 * qq)) & 0x03030303u) << 4), 0x20202020u));
    sc = half_at(e + 2 * (kbi & 1)) * static_cast<float>(static_cast<int8_t>(r[192 + s]));
    mn = 0.0f;
  }
};

template <TensorType TT, int NT, int ST = 0>
struct Layout {
  using F = Fmt<TT>;
  static constexpr int kCols = 8 * NT;
  static constexpr int kStages = ST > 0 ? ST : NT <= 2 ? 4 : 3;
  static constexpr int kW = kTileRows * F::kRow;
  static constexpr int kE = (kTileRows * F::kExtra + 15) / 16 * 16;
  static constexpr int kX = kCols * kXRow;
  static constexpr int kXd = kCols * 8 * 8;  // scale pairs as [block of 32][column]
  static constexpr int kStage = kW + kE + kX + kXd;
  static constexpr int kRed = kCols * kTileRows * 4;  // the block's partial sums, after the loop
  static constexpr int kSmem = kStages * kStage > kRed ? kStages * kStage : kRed;
};

// Issues the weight copies of K step kc into stage buffer st (the weights, then their extra array
// at kTileRows * F::kRow).
template <TensorType TT, int THREADS = kThreads>
__device__ void copy_weights(const Params& p, int64_t row0, int64_t kc, uint8_t* st) {
  using F = Fmt<TT>;
  for (int i = threadIdx.x; i < kTileRows * F::kChunks; i += THREADS) {
    const int r = i / F::kChunks, c = i % F::kChunks;
    const int64_t row = min(row0 + r, p.n_out - 1);  // rows past the matrix: computed, never stored
    // Blocks past a row's end (a last K step of 32-value blocks) read as zeros.
    const bool in_row = F::kChunksPerBlock == 0 || kc * 8 + c / max(F::kChunksPerBlock, 1) < p.nb;
    cp16(st + r * F::kRow + 16 * c, F::src(p, row, kc, c), in_row);
  }
  if (F::kExtra > 0) {
    for (int r = threadIdx.x; r < kTileRows; r += THREADS) {
      F::copy_extra(p, min(row0 + r, p.n_out - 1), kc, st + kTileRows * F::kRow + r * F::kExtra);
    }
  }
}

// Issues the activation copies (8-bit values and scale pairs) of K step kc: column c holds
// activation row src[c], zeros where src[c] < 0.
template <TensorType TT, int NT>
__device__ void copy_activations(const Params& p, const int* src, int64_t kc, uint8_t* st) {
  using L = Layout<TT, NT>;
  uint8_t* x = st + L::kW + L::kE;
  uint8_t* xd = x + L::kX;
  // Per column: 16 chunks of values, then its 8 scale pairs, stored transposed ([block][column])
  // so that a thread reads the pairs of its two adjacent columns in one 16-byte load.
  for (int i = threadIdx.x; i < L::kCols * 24; i += kThreads) {
    const int c = i / 24, part = i % 24;
    const bool ok = src[c] >= 0;
    const int64_t tt = ok ? src[c] : 0;
    if (part < 16) {  // zeros past n_in (a last partial K step)
      cp16(x + c * kXRow + 16 * part, p.xq + tt * p.n_in + kc * kK + 16 * part, ok && kc * kK + 16 * part < p.n_in);
    } else {
      const int b = part - 16;
      cp8(xd + (b * L::kCols + c) * 8, p.xds + tt * (p.n_in / 32) + kc * 8 + b, ok && kc * 8 + b < p.n_in / 32);
    }
  }
}

__device__ __forceinline__ void mma_k32(int (&c)[4], int a0, int a1, int a2, int a3, int b0, int b1) {
  c[0] = c[1] = c[2] = c[3] = 0;
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_k16(int (&c)[4], int a0, int a1, int b0) {
  c[0] = c[1] = c[2] = c[3] = 0;
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(b0));
}

// Multiplies one stage: the warp's 16 rows (ra = its row g, rb = g + 8) with all columns.
// SHARE (K-quants, whose 6-bit scales and minimums take many instructions to unpack): the four
// lanes of a row group each unpack two of the eight sub-blocks' (scale, min) and pass them to
// the others by shuffles, instead of each lane unpacking all eight.
template <TensorType TT, int NT, bool SHARE>
__device__ __forceinline__ void compute_stage(const uint8_t* st, int64_t kbi_a, int64_t kbi_b, int ra, int rb,
                                              float (&acc)[NT][4]) {
  using F = Fmt<TT>;
  using L = Layout<TT, NT>;
  constexpr bool kShare = SHARE && F::kMin;
  const int lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
  const uint8_t* wa = st + ra * F::kRow;
  const uint8_t* wb = st + rb * F::kRow;
  const uint8_t* ea = st + L::kW + ra * F::kExtra;
  const uint8_t* eb = st + L::kW + rb * F::kExtra;
  const uint8_t* x = st + L::kW + L::kE;
  const uint8_t* xd = x + L::kX;
  float own[2][4];  // kShare: this lane's sub-blocks 2 tig and 2 tig + 1: (scale, min) of rows a and b
  if constexpr (kShare) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      F::scale_min(wa, 2 * tig + h, own[h][0], own[h][1]);
      F::scale_min(wb, 2 * tig + h, own[h][2], own[h][3]);
    }
  }
#pragma unroll 2
  for (int j = 0; j < kK / F::kSub; ++j) {
    int a0, a1, a2 = 0, a3 = 0;
    float sa, sb, ma, mb;
    if constexpr (kShare) {
      F::quants(wa, j, tig, a0, a2);
      F::quants(wb, j, tig, a1, a3);
      const int src = (lane & ~3) | (j >> 1);
      const float* o = own[j & 1];
      sa = __shfl_sync(0xffffffffu, o[0], src);
      ma = __shfl_sync(0xffffffffu, o[1], src);
      sb = __shfl_sync(0xffffffffu, o[2], src);
      mb = __shfl_sync(0xffffffffu, o[3], src);
    } else {
      F::frag(wa, ea, kbi_a, j, tig, a0, a2, sa, ma);
      F::frag(wb, eb, kbi_b, j, tig, a1, a3, sb, mb);
    }
    const int blk = j * F::kSub / 32;  // the activations' 32-value block
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const uint8_t* xr = x + (8 * nt + g) * kXRow + j * F::kSub + 4 * tig;
      int c[4];
      if constexpr (F::kSub == 32) {
        mma_k32(c, a0, a1, a2, a3, static_cast<int>(ld32(xr)), static_cast<int>(ld32(xr + 16)));
      } else {
        mma_k16(c, a0, a1, static_cast<int>(ld32(xr)));
      }
      const float4 xs = *reinterpret_cast<const float4*>(xd + (blk * L::kCols + 8 * nt + 2 * tig) * 8);
      const float2 xa = make_float2(xs.x, xs.y), xb = make_float2(xs.z, xs.w);
      acc[nt][0] = fmaf(i2f(c[0]), sa * xa.x, acc[nt][0]);
      acc[nt][1] = fmaf(i2f(c[1]), sa * xb.x, acc[nt][1]);
      acc[nt][2] = fmaf(i2f(c[2]), sb * xa.x, acc[nt][2]);
      acc[nt][3] = fmaf(i2f(c[3]), sb * xb.x, acc[nt][3]);
      if constexpr (F::kMin) {
        acc[nt][0] = fmaf(-ma, xa.y, acc[nt][0]);
        acc[nt][1] = fmaf(-ma, xb.y, acc[nt][1]);
        acc[nt][2] = fmaf(-mb, xa.y, acc[nt][2]);
        acc[nt][3] = fmaf(-mb, xb.y, acc[nt][3]);
      }
    }
  }
}

// A dense product's block: takes its segment's matrix into p and returns its tile within it
// (static indices: the segments stay in parameter space).
__device__ __forceinline__ int64_t select_segment(Params& p) {
  int64_t tile = blockIdx.x;
  int sel = 0;
#pragma unroll
  for (int i = 1; i < kMaxSegments; ++i)
    if (i < p.n_seg && tile >= p.seg[i].tile0) sel = i;
#pragma unroll
  for (int i = 0; i < kMaxSegments; ++i) {
    if (i == sel) {
      p.w = p.seg[i].w;
      p.NB = p.seg[i].NB;
      p.n_out = p.seg[i].n_out;
      p.y = p.seg[i].y;
      p.ys = p.seg[i].ys;
      tile -= p.seg[i].tile0;
    }
  }
  return tile;
}

// After the K loop, with every thread's partial sums in red[column][row] (shared memory): each
// block of the cluster adds its share of rows over all blocks in rank order (a fixed order:
// bit-stable) and writes them to output rows dst_row[column].
template <int COLS, int THREADS>
__device__ void reduce_and_store(const Params& p, const float* red, const int* dst_row, int64_t row0) {
  const int split = gridDim.z, part = blockIdx.z;
#if __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  if (split > 1) cluster.sync();
  else __syncthreads();
#else
  __syncthreads();  // no clusters before sm_90: the host never splits K there
#endif
  const int share = kTileRows / split, r_begin = share * part;
  for (int e = threadIdx.x; e < share * COLS; e += THREADS) {
    const int c = e / share, r = r_begin + e % share;
    const int64_t row = row0 + r;
    const int t = dst_row[c];
    float v = 0.0f;
    for (int q = 0; q < split; ++q) {
#if __CUDA_ARCH__ >= 900
      const float* src = split > 1 ? cluster.map_shared_rank(red, q) : red;
#else
      const float* src = red;
#endif
      v += src[c * kTileRows + r];
    }
    if (row < p.n_out && t >= 0) {
      float* o = p.y + static_cast<int64_t>(t) * p.ys + row;
      *o = p.add ? *o + v : v;
    }
  }
#if __CUDA_ARCH__ >= 900
  if (split > 1) cluster.sync();  // the other blocks' shared memory is read until here
#endif
}

// grid: x = 64-row weight tiles, y = chunks of 8 NT activation rows, z = the K split (a cluster).
// EXPERTS: y = tiles of pairs (p.tiles, one expert each), no split.
template <TensorType TT, int NT, bool EXPERTS, int ST, bool SHARE>
__global__ void __launch_bounds__(kThreads) mmq_kernel(Params p) {
  using L = Layout<TT, NT, ST>;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ int src_row[L::kCols], dst_row[L::kCols];  // per column: activation row, output row (-1: none)
  int64_t tile = blockIdx.x;
  if constexpr (!EXPERTS) tile = select_segment(p);
  const int64_t row0 = tile * kTileRows;
  const int split = gridDim.z, part = blockIdx.z;
  const int64_t n_k = (p.n_in + kK - 1) / kK;  // the last step may be partial (32-value blocks)
  const int64_t k_begin = n_k * part / split, k_end = n_k * (part + 1) / split, n_steps = k_end - k_begin;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
  const int ra = 16 * warp + g, rb = ra + 8;
  const int64_t grow_a = min(row0 + ra, p.n_out - 1), grow_b = min(row0 + rb, p.n_out - 1);

  if constexpr (EXPERTS) {
    grid_dependency_wait();  // the tiles come from the preceding kernel (moe_group_pairs)
    if (static_cast<int>(blockIdx.y) >= *p.n_tiles) return;
    const int4 tile = p.tiles[blockIdx.y];
    p.w += tile.x * p.expert_bytes;
    for (int c = threadIdx.x; c < L::kCols; c += kThreads) {
      const int pair = c < tile.z ? p.order[tile.y + c] : -1;
      dst_row[c] = pair;
      src_row[c] = pair < 0 ? -1 : pair / p.x_group;
    }
    __syncthreads();
    for (int s = 0; s < L::kStages - 1; ++s) {
      if (s < n_steps) {
        copy_weights<TT>(p, row0, k_begin + s, smem + s * L::kStage);
        copy_activations<TT, NT>(p, src_row, k_begin + s, smem + s * L::kStage);
      }
      cp_commit();
    }
  } else {
    const int col0 = blockIdx.y * L::kCols;
    for (int c = threadIdx.x; c < L::kCols; c += kThreads) {
      src_row[c] = dst_row[c] = col0 + c < p.T ? col0 + c : -1;
    }
    __syncthreads();
    // Weights never depend on the preceding kernel: their first stages are requested before the
    // wait on it (PDL), the activations after.
    for (int s = 0; s < L::kStages - 1; ++s) {
      if (s < n_steps) copy_weights<TT>(p, row0, k_begin + s, smem + s * L::kStage);
    }
    grid_dependency_wait();
    for (int s = 0; s < L::kStages - 1; ++s) {
      if (s < n_steps) copy_activations<TT, NT>(p, src_row, k_begin + s, smem + s * L::kStage);
      cp_commit();
    }
  }

  float acc[NT][4] = {};
  for (int64_t i = 0; i < n_steps; ++i) {
    cp_wait<L::kStages - 2>();
    __syncthreads();  // stage i has landed for all threads; stage i - 1 is no longer read
    const int64_t next = i + L::kStages - 1;
    if (next < n_steps) {
      uint8_t* st = smem + (next % L::kStages) * L::kStage;
      copy_weights<TT>(p, row0, k_begin + next, st);
      copy_activations<TT, NT>(p, src_row, k_begin + next, st);
    }
    cp_commit();
    const int64_t kc = k_begin + i;
    compute_stage<TT, NT, SHARE>(smem + (i % L::kStages) * L::kStage, grow_a * p.nb + kc, grow_b * p.nb + kc, ra, rb,
                                 acc);
  }
  cp_wait<0>();
  __syncthreads();

  // Partial sums to shared memory as red[column][row] (the mma's accumulator layout).
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int k = 0; k < 4; ++k) red[(8 * nt + 2 * tig + (k & 1)) * kTileRows + (k < 2 ? ra : rb)] = acc[nt][k];
  }
  reduce_and_store<L::kCols, kThreads>(p, red, dst_row, row0);
}

// ---- the f16 variant (MmqTuning::f16): weights decoded in registers to f16 (each sub-block's
// scale and minimum applied there), activations as f16 rows, m16n8k16 f16 products with f32
// accumulators. The int8 kernel above spends ~22 instructions and 768 bytes of shared memory per
// m16n8k32 on activation loads and on scaling each product's integer sums into floats; here a
// decoded weight fragment serves every column tile and a warp's 32 rows (two m16 tiles) share each
// activation fragment: ~3.5 instructions and 128 bytes per m16n8k16 at 64 columns. 2 KP warps
// share a block's 64-row tile: two row halves times KP parts of each stage's K (2 or 4:
// MmqTuning::f16_k_parts; their sums added at the end in a fixed order), so that the
// shared-memory-bound block count still gives each SM 4 KP warps. ----

constexpr int kXhRow = 2 * kK + 32;        // bytes per f16 activation row in shared memory (pad: 8-byte loads conflict-free)

template <TensorType TT, int NT>
struct LayoutH {
  using F = Fmt<TT>;
  static constexpr int kCols = 8 * NT;
  static constexpr int kStages = NT <= 2 ? 3 : 2;
  static constexpr int kW = kTileRows * F::kRow;
  static constexpr int kE = (kTileRows * F::kExtra + 15) / 16 * 16;
  static constexpr int kStage = kW + kE + kCols * kXhRow;
  static constexpr int kRed = kCols * kTileRows * 4;
  static constexpr int kSmem = kStages * kStage > kRed ? kStages * kStage : kRed;
};

// The f16 activations of K step kc (zeros past n_in and for columns without a row).
template <int NT, int THREADS>
__device__ void copy_activations_f16(const Params& p, const int* src, int64_t kc, uint8_t* x) {
  for (int i = threadIdx.x; i < 8 * NT * 32; i += THREADS) {
    const int c = i >> 5, part = i & 31;
    const int64_t k = kc * kK + 8 * part;
    const bool ok = src[c] >= 0 && k < p.n_in;
    cp16(x + c * kXhRow + 16 * part, p.xh + (ok ? src[c] : 0) * p.n_in + k, ok);
  }
}

__device__ __forceinline__ __half2 as_h2(uint32_t u) { return *reinterpret_cast<const __half2*>(&u); }

// Four unsigned bytes b0..b3 (< 256) as the pairs (b0, b1) and (b2, b3), each value
// (1024 + b - off) * mul + add: a byte under the exponent of 1024 is 1024 + b exactly in f16,
// and subtracting off (1024 + the format's zero point) first keeps the small result exact.
__device__ __forceinline__ void decode_pairs(uint32_t bytes, __half2 off, __half2 mul, __half2 add, uint32_t& lo,
                                             uint32_t& hi) {
  const __half2 a = __hfma2(__hsub2(as_h2(__byte_perm(bytes, 0x64646464u, 0x4140)), off), mul, add);
  const __half2 b = __hfma2(__hsub2(as_h2(__byte_perm(bytes, 0x64646464u, 0x4342)), off), mul, add);
  lo = *reinterpret_cast<const uint32_t*>(&a);
  hi = *reinterpret_cast<const uint32_t*>(&b);
}

// Thread tig's 8 weights of 32-value group j of a row's K step as f16 pairs: v[0] = values
// (4 tig, 4 tig + 1), v[1] = (4 tig + 2, 4 tig + 3), v[2], v[3] the same 16 values on. r: the
// row's bytes in the stage, e: its extra bytes, kbi: its block index (Q6_K's d word), sm: the
// K-quants' (scale, -min) of the group.
template <TensorType TT>
struct DecodeH;

template <TensorType TT>
struct DecodeKQuant {  // Q4_K, Q5_K: unsigned 4/5-bit values, per-group scale and minimum
  __device__ static void run(const uint8_t* r, const uint8_t*, int64_t, int j, int tig, __half2 sm, uint32_t (&v)[4]) {
    int lo, hi;
    Fmt<TT>::quants(r, j, tig, lo, hi);
    const __half2 off = __float2half2_rn(1024.0f), mul = __low2half2(sm), add = __high2half2(sm);
    decode_pairs(static_cast<uint32_t>(lo), off, mul, add, v[0], v[1]);
    decode_pairs(static_cast<uint32_t>(hi), off, mul, add, v[2], v[3]);
  }
};
template <>
struct DecodeH<TensorType::Q4_K> : DecodeKQuant<TensorType::Q4_K> {};
template <>
struct DecodeH<TensorType::Q5_K> : DecodeKQuant<TensorType::Q5_K> {};

template <>
struct DecodeH<TensorType::Q8_0> {  // signed bytes (as unsigned + 128), the block's f16 scale
  __device__ static void run(const uint8_t* r, const uint8_t* e, int64_t, int j, int tig, __half2, uint32_t (&v)[4]) {
    const __half2 off = __float2half2_rn(1152.0f), mul = __half2half2(*reinterpret_cast<const __half*>(e + 2 * j));
    const __half2 add = __float2half2_rn(0.0f);
    decode_pairs(ld32(r + 32 * j + 4 * tig) ^ 0x80808080u, off, mul, add, v[0], v[1]);
    decode_pairs(ld32(r + 32 * j + 16 + 4 * tig) ^ 0x80808080u, off, mul, add, v[2], v[3]);
  }
};

template <>
struct DecodeH<TensorType::Q4_0> {  // nibbles minus 8 (value j < 16 low, else high of byte j - 16)
  __device__ static void run(const uint8_t* r, const uint8_t* e, int64_t, int j, int tig, __half2, uint32_t (&v)[4]) {
    const __half2 off = __float2half2_rn(1032.0f), mul = __half2half2(*reinterpret_cast<const __half*>(e + 2 * j));
    const __half2 add = __float2half2_rn(0.0f);
    const uint32_t w = ld32(r + 16 * j + 4 * tig);
    decode_pairs(w & 0x0F0F0F0Fu, off, mul, add, v[0], v[1]);
    decode_pairs((w >> 4) & 0x0F0F0F0Fu, off, mul, add, v[2], v[3]);
  }
};

template <>
struct DecodeH<TensorType::Q6_K> {  // 6-bit values minus 32, an int8 scale per 16 values times d
  __device__ static void run(const uint8_t* r, const uint8_t* e, int64_t kbi, int j, int tig, __half2,
                             uint32_t (&v)[4]) {
    const int n = j >> 2, qq = j & 3;
    const float d = half_at(e + 2 * (kbi & 1));
    const __half2 off = __float2half2_rn(1056.0f), add = __float2half2_rn(0.0f);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int l = 16 * h + 4 * tig;
      const uint32_t a = ld32(r + 64 * n + 32 * (qq & 1) + l);
      const uint32_t hb = ld32(r + 128 + 32 * n + l);
      const uint32_t b = ((qq < 2 ? a : a >> 4) & 0x0F0F0F0Fu) | (((hb >> (2 * qq)) & 0x03030303u) << 4);
      const __half2 mul = __float2half2_rn(d * static_cast<float>(static_cast<int8_t>(r[192 + 2 * j + h])));
      decode_pairs(b, off, mul, add, v[2 * h], v[2 * h + 1]);
    }
  }
};


__device__ __forceinline__ void mma_f16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Part kp of a stage's K (32-value groups G kp .. G kp + G - 1, G = 8 / KP): the warp's rows
// row[m][0] = 32 (warp & 1) + 16 m + g and row[m][1] = that + 8, all columns.
// A thread's values 4 tig.. of a 16-value half are its logical k 2 tig, 2 tig + 1 of that half's
// mma and values 4 tig + 2.. its k 2 tig + 8, + 9 (a permutation of K inside each mma, the same
// for weights and activations), so a column's activation fragment is one 8-byte load.
template <TensorType TT, int NT, int KP>
__device__ __forceinline__ void compute_stage_f16(const uint8_t* st, int kp, const int (&row)[2][2],
                                                  const int64_t (&kbi)[2][2], float (&acc)[2][NT][4]) {
  using F = Fmt<TT>;
  using L = LayoutH<TT, NT>;
  constexpr int G = kK / 32 / KP;
  const int lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
  const uint8_t* x = st + L::kW + L::kE;
  // K-quants: this lane unpacks the (scale, -min) of group G kp + tig % G for its rows; the four
  // lanes of a row group pass them round by shuffles.
  uint32_t own[2][2] = {};
  if constexpr (F::kMin) {
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float sc, mn;
        F::scale_min(st + row[m][rr] * F::kRow, G * kp + tig % G, sc, mn);
        const __half2 v = __floats2half2_rn(sc, -mn);
        own[m][rr] = *reinterpret_cast<const uint32_t*>(&v);
      }
  }
#pragma unroll
  for (int jj = 0; jj < G; ++jj) {
    const int j = G * kp + jj;
    uint32_t v[2][2][4];
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        uint32_t sm = 0;
        if constexpr (F::kMin) sm = __shfl_sync(0xffffffffu, own[m][rr], (lane & ~3) | jj);
        DecodeH<TT>::run(st + row[m][rr] * F::kRow, st + L::kW + row[m][rr] * F::kExtra, kbi[m][rr], j, tig,
                         as_h2(sm), v[m][rr]);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint2 b = *reinterpret_cast<const uint2*>(x + (8 * nt + g) * kXhRow + 2 * (32 * j + 16 * h + 4 * tig));
#pragma unroll
        for (int m = 0; m < 2; ++m) mma_f16(acc[m][nt], v[m][0][2 * h], v[m][1][2 * h], v[m][0][2 * h + 1], v[m][1][2 * h + 1], b.x, b.y);
      }
  }
}

// grid as mmq_kernel's: x = 64-row weight tiles (of every segment), y = chunks of 8 NT activation
// rows, z = the K split (a cluster); EXPERTS: y = tiles of pairs (one expert each), no split.
template <TensorType TT, int NT, int KP, bool EXPERTS>
__global__ void __launch_bounds__(64 * KP) mmq_f16_kernel(Params p) {
  using L = LayoutH<TT, NT>;
  constexpr int kHThreads = 64 * KP;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ int src_row[L::kCols], dst_row[L::kCols];  // per column: activation row, output row (-1: none)
  int64_t tile = blockIdx.x;
  if constexpr (EXPERTS) {
    grid_dependency_wait();  // the tiles come from the preceding kernel (moe_group_pairs)
    if (static_cast<int>(blockIdx.y) >= *p.n_tiles) return;
    const int4 t = p.tiles[blockIdx.y];
    p.w += t.x * p.expert_bytes;
    for (int c = threadIdx.x; c < L::kCols; c += kHThreads) {
      const int pair = c < t.z ? p.order[t.y + c] : -1;
      dst_row[c] = pair;
      src_row[c] = pair < 0 ? -1 : pair / p.x_group;
    }
  } else {
    tile = select_segment(p);
    const int col0 = blockIdx.y * L::kCols;
    for (int c = threadIdx.x; c < L::kCols; c += kHThreads) src_row[c] = dst_row[c] = col0 + c < p.T ? col0 + c : -1;
  }
  const int64_t row0 = tile * kTileRows;
  const int split = gridDim.z, part = blockIdx.z;
  const int64_t n_k = (p.n_in + kK - 1) / kK;
  const int64_t k_begin = n_k * part / split, k_end = n_k * (part + 1) / split, n_steps = k_end - k_begin;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
  int row[2][2];
  int64_t grow[2][2];
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      row[m][rr] = 32 * (warp & 1) + 16 * m + 8 * rr + g;
      grow[m][rr] = min(row0 + row[m][rr], p.n_out - 1);
    }
  __syncthreads();
  for (int s = 0; s < L::kStages - 1; ++s) {
    if (s < n_steps) copy_weights<TT, kHThreads>(p, row0, k_begin + s, smem + s * L::kStage);
  }
  // Dense: weights before the wait on the preceding kernel (PDL), activations after.
  if constexpr (!EXPERTS) grid_dependency_wait();
  for (int s = 0; s < L::kStages - 1; ++s) {
    if (s < n_steps) copy_activations_f16<NT, kHThreads>(p, src_row, k_begin + s, smem + s * L::kStage + L::kW + L::kE);
    cp_commit();
  }
  float acc[2][NT][4] = {};
  for (int64_t i = 0; i < n_steps; ++i) {
    cp_wait<L::kStages - 2>();
    __syncthreads();
    const int64_t next = i + L::kStages - 1;
    if (next < n_steps) {
      uint8_t* st = smem + (next % L::kStages) * L::kStage;
      copy_weights<TT, kHThreads>(p, row0, k_begin + next, st);
      copy_activations_f16<NT, kHThreads>(p, src_row, k_begin + next, st + L::kW + L::kE);
    }
    cp_commit();
    const int64_t kc = k_begin + i;
    int64_t kbi[2][2];
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) kbi[m][rr] = grow[m][rr] * p.nb + kc;
    compute_stage_f16<TT, NT, KP>(smem + (i % L::kStages) * L::kStage, warp >> 1, row, kbi, acc);
  }
  cp_wait<0>();
  __syncthreads();
  // The first K part's sums to red[column][row], then each further part's added (a fixed order).
  float* red = reinterpret_cast<float*>(smem);
  const int tig = lane & 3;
  for (int kp = 0; kp < KP; ++kp) {
    if ((warp >> 1) == kp) {
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            float& r = red[(8 * nt + 2 * tig + (k & 1)) * kTileRows + row[m][k >> 1]];
            r = kp == 0 ? acc[m][nt][k] : r + acc[m][nt][k];
          }
    }
    if (kp + 1 < KP) __syncthreads();
  }
  reduce_and_store<L::kCols, kHThreads>(p, red, dst_row, row0);
}

template <TensorType TT, int NT, int KP, bool EXPERTS>
void launch_mmq_f16(const Params& p, int64_t tiles, int chunks, int split, const Launch& s) {
  using L = LayoutH<TT, NT>;
  auto* k = mmq_f16_kernel<TT, NT, KP, EXPERTS>;
  PIPELLM_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kSmem));
  LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks), static_cast<unsigned>(split));
  shape.block = dim3(64 * KP);
  shape.smem = L::kSmem;
  shape.cluster_z = static_cast<unsigned>(split);
  launch_kernel(s, k, shape, p);
}

template <TensorType TT, int KP, bool EXPERTS>
void launch_f16_tiles(const Params& p, int nt, int64_t tiles, int chunks, int split, const Launch& s) {
  switch (nt) {
    case 1: launch_mmq_f16<TT, 1, KP, EXPERTS>(p, tiles, chunks, split, s); break;
    case 2: launch_mmq_f16<TT, 2, KP, EXPERTS>(p, tiles, chunks, split, s); break;
    case 4: launch_mmq_f16<TT, 4, KP, EXPERTS>(p, tiles, chunks, split, s); break;
    case 8: launch_mmq_f16<TT, 8, KP, EXPERTS>(p, tiles, chunks, split, s); break;
    default: throw Error("mmq (f16): no kernel for " + std::to_string(nt) + " column tiles");
  }
}

template <bool EXPERTS>
void launch_f16(TensorType t, const Params& p, int nt, int k_parts, int64_t tiles, int chunks, int split,
                const Launch& s) {
  const auto parts = [&](auto tag) {
    constexpr TensorType TT = decltype(tag)::value;
    if (k_parts == 4) launch_f16_tiles<TT, 4, EXPERTS>(p, nt, tiles, chunks, split, s);
    else launch_f16_tiles<TT, 2, EXPERTS>(p, nt, tiles, chunks, split, s);
  };
  switch (t) {
    case TensorType::Q8_0: parts(std::integral_constant<TensorType, TensorType::Q8_0>{}); break;
    case TensorType::Q4_0: parts(std::integral_constant<TensorType, TensorType::Q4_0>{}); break;
    case TensorType::Q4_K: parts(std::integral_constant<TensorType, TensorType::Q4_K>{}); break;
    case TensorType::Q5_K: parts(std::integral_constant<TensorType, TensorType::Q5_K>{}); break;
    case TensorType::Q6_K: parts(std::integral_constant<TensorType, TensorType::Q6_K>{}); break;
    default: throw Error("mmq (f16): no kernel for " + std::string(tensor_type_name(t)));
  }
  PIPELLM_CUDA_LAUNCH_CHECK("mmq (f16)");
}

// Groups the pairs by expert into tiles of up to `cols` pairs (one block: counting sort in shared
// memory; the order of pairs within an expert does not matter, each column is computed alone).
__global__ void __launch_bounds__(1024) moe_group_kernel(const int32_t* ids, int n_pairs, int n_expert, int cols,
                                                         int max_tiles, int32_t* order, int4* tiles,
                                                         int32_t* n_tiles) {
  extern __shared__ int grp[];  // count[n_expert], then start[n_expert]
  int* count = grp;
  int* start = grp + n_expert;
  grid_dependency_wait();
  for (int e = threadIdx.x; e < n_expert; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int q = threadIdx.x; q < n_pairs; q += blockDim.x) {
    const int e = ids[q];
    if (e >= 0 && e < n_expert) atomicAdd(&count[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int at = 0, nt = 0;
    for (int e = 0; e < n_expert; ++e) {
      start[e] = at;
      for (int c0 = 0; c0 < count[e] && nt < max_tiles; c0 += cols) {
        tiles[nt++] = make_int4(e, at + c0, min(cols, count[e] - c0), 0);
      }
      at += count[e];
    }
    *n_tiles = nt;
  }
  __syncthreads();
  for (int q = threadIdx.x; q < n_pairs; q += blockDim.x) {
    const int e = ids[q];
    if (e >= 0 && e < n_expert) order[atomicAdd(&start[e], 1)] = q;
  }
}

template <TensorType TT, int NT, bool EXPERTS, int ST, bool SHARE>
void launch_mmq(const Params& p, int64_t tiles, int chunks, int split, const Launch& s) {
  using L = Layout<TT, NT, ST>;
  auto* k = mmq_kernel<TT, NT, EXPERTS, ST, SHARE>;
  PIPELLM_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kSmem));
  LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks), static_cast<unsigned>(split));
  shape.block = dim3(kThreads);
  shape.smem = L::kSmem;
  shape.cluster_z = static_cast<unsigned>(split);
  launch_kernel(s, k, shape, p);
}

template <TensorType TT, bool EXPERTS, int ST, bool SHARE>
void launch_tiles(const Params& p, int nt, int64_t tiles, int chunks, int split, const Launch& s) {
  switch (nt) {
    case 1: launch_mmq<TT, 1, EXPERTS, ST, SHARE>(p, tiles, chunks, split, s); break;
    case 2: launch_mmq<TT, 2, EXPERTS, ST, SHARE>(p, tiles, chunks, split, s); break;
    case 4: launch_mmq<TT, 4, EXPERTS, ST, SHARE>(p, tiles, chunks, split, s); break;
    case 8: launch_mmq<TT, 8, EXPERTS, ST, SHARE>(p, tiles, chunks, split, s); break;
    default: throw Error("mmq: no kernel for " + std::to_string(nt) + " column tiles");
  }
}

template <TensorType TT, bool EXPERTS>
void launch_type(const Params& p, int nt, const MmqTuning& tu, int64_t tiles, int chunks, int split, const Launch& s) {
  if (tu.stages == 2) {
    if (tu.shared_scales) launch_tiles<TT, EXPERTS, 2, true>(p, nt, tiles, chunks, split, s);
    else launch_tiles<TT, EXPERTS, 2, false>(p, nt, tiles, chunks, split, s);
  } else {
    if (tu.shared_scales) launch_tiles<TT, EXPERTS, 0, true>(p, nt, tiles, chunks, split, s);
    else launch_tiles<TT, EXPERTS, 0, false>(p, nt, tiles, chunks, split, s);
  }
}

// The current device's SM count, and whether it has thread-block clusters (sm_90+).
struct DeviceShape {
  int sms = 0;
  bool clusters = false;
};
DeviceShape device_shape() {
  int dev = 0, cc = 0;
  DeviceShape d;
  PIPELLM_CUDA_CHECK(cudaGetDevice(&dev));
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev));
  d.clusters = cc >= 9;
  return d;
}

}  // namespace

bool mmq_supports(const DeviceMatrix& w) {
  if (w.n_out <= 0 || w.n_in <= 0) return false;
  switch (w.type) {
    case TensorType::Q4_0:
    case TensorType::Q8_0:
    case TensorType::MXFP4: return w.n_in % 32 == 0;
    case TensorType::Q4_K:
    case TensorType::Q5_K: return w.n_in % kK == 0;
    case TensorType::Q6_K: return w.n_in % kK == 0 && (w.n_out * (w.n_in / kK)) % 2 == 0;
    default: return false;
  }
}

namespace {

void check_supported(const DeviceMatrix& w) {
  if (!mmq_supports(w)) {
    throw Error(std::string("mmq: unsupported weight ") + tensor_type_name(w.type) + " [" + std::to_string(w.n_in) +
                ", " + std::to_string(w.n_out) +
                "] (Q4_0, Q8_0, MXFP4 with n_in a multiple of 32; Q4_K, Q5_K, Q6_K with n_in a multiple of 256, "
                "Q6_K with an even block count)");
  }
}

Params params_of(const DeviceMatrix& w, const int8_t* xq, const float2* xds, float* y, int64_t y_stride) {
  Params p{};
  p.w = w.data;
  p.nb = w.n_in / tensor_type_info(w.type).block_size;
  p.NB = w.blocks();
  p.n_in = w.n_in;
  p.n_out = w.n_out;
  p.xq = xq;
  p.xds = xds;
  p.y = y;
  p.ys = y_stride;
  return p;
}

template <bool EXPERTS>
void launch_any(TensorType t, const Params& p, int nt, const MmqTuning& tu, int64_t tiles, int chunks, int split,
                const Launch& s) {
  switch (t) {
    case TensorType::Q8_0: launch_type<TensorType::Q8_0, EXPERTS>(p, nt, tu, tiles, chunks, split, s); break;
    case TensorType::Q4_0: launch_type<TensorType::Q4_0, EXPERTS>(p, nt, tu, tiles, chunks, split, s); break;
    case TensorType::Q4_K: launch_type<TensorType::Q4_K, EXPERTS>(p, nt, tu, tiles, chunks, split, s); break;
    case TensorType::Q5_K: launch_type<TensorType::Q5_K, EXPERTS>(p, nt, tu, tiles, chunks, split, s); break;
    case TensorType::Q6_K: launch_type<TensorType::Q6_K, EXPERTS>(p, nt, tu, tiles, chunks, split, s); break;
    case TensorType::MXFP4: launch_type<TensorType::MXFP4, EXPERTS>(p, nt, tu, tiles, chunks, split, s); break;
    default: throw Error("mmq: no kernel for " + std::string(tensor_type_name(t)));
  }
  PIPELLM_CUDA_LAUNCH_CHECK("mmq");
}

bool has_f16_kernel(TensorType t) {
  switch (t) {
    case TensorType::Q8_0:
    case TensorType::Q4_0:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K: return true;
    default: return false;  // MXFP4: its E8M0 scales exceed f16's range
  }
}

// The fewest column tiles of 8 (1, 2, 4 or 8) that hold `cols` columns.
int column_tiles(int cols) {
  int nt = 1;
  while (nt < 8 && 8 * nt < cols) nt *= 2;
  return nt;
}

}  // namespace

void mmq(const MmqArgs& a, const Launch& s) {
  check_supported(a.w);
  if (a.n_extra < 0 || a.n_extra > kMmqMaxExtra) {
    throw Error("mmq: " + std::to_string(a.n_extra) + " extra matrices (0.." + std::to_string(kMmqMaxExtra) + ")");
  }
  if (a.n_rows <= 0) return;
  Params p = params_of(a.w, a.xq, a.xds, a.y, a.y_stride);
  p.T = a.n_rows;
  p.add = a.add;
  // Column tiles: the fewest of 8, 16, 32, 64 rows that hold the batch; 64 per block beyond.
  const int nt = column_tiles(a.n_rows);
  const int chunks = (a.n_rows + 8 * nt - 1) / (8 * nt);
  int64_t tiles = 0;
  p.n_seg = 1 + a.n_extra;
  for (int i = 0; i < p.n_seg; ++i) {
    const MmqSegment sg = i == 0 ? MmqSegment{a.w, a.y, a.y_stride} : a.extra[i - 1];
    if (i > 0) {
      check_supported(sg.w);
      if (sg.w.type != a.w.type || sg.w.n_in != a.w.n_in) {
        throw Error(std::string("mmq: an extra matrix of ") + tensor_type_name(sg.w.type) + " [" +
                    std::to_string(sg.w.n_in) + ", ...] beside " + tensor_type_name(a.w.type) + " [" +
                    std::to_string(a.w.n_in) + ", ...] (one launch needs one type and one n_in)");
      }
    }
    p.seg[i] = {sg.w.data, sg.w.blocks(), sg.w.n_out, sg.y, sg.y_stride, tiles};
    tiles += (sg.w.n_out + kTileRows - 1) / kTileRows;
  }
  if (tiles > 0x7fffffff || chunks > 65535) throw Error("mmq: product too large for one launch");
  const MmqTuning& tu = a.tuning;
  if ((tu.stages != 0 && tu.stages != 2) || tu.blocks_per_sm < 1 || tu.blocks_per_sm > 16 ||
      (tu.f16_k_parts != 2 && tu.f16_k_parts != 4)) {
    throw Error("mmq: tuning of " + std::to_string(tu.stages) + " stages, " + std::to_string(tu.blocks_per_sm) +
                " blocks per SM and " + std::to_string(tu.f16_k_parts) +
                " f16 K parts (stages 0 or 2, blocks 1..16, K parts 2 or 4)");
  }
  // Split K over a cluster until about blocks_per_sm blocks per SM exist, keeping >= 2 K steps per block.
  const DeviceShape dev = device_shape();
  const int64_t n_k = (a.w.n_in + kK - 1) / kK, want = tu.blocks_per_sm * static_cast<int64_t>(dev.sms);
  int split = 1;
  while (dev.clusters && split < kMaxCluster && tiles * chunks * split < want && n_k >= 2 * split) split *= 2;
  if (tu.f16 && a.xh != nullptr && has_f16_kernel(a.w.type)) {
    p.xh = a.xh;
    launch_f16<false>(a.w.type, p, nt, tu.f16_k_parts, tiles, chunks, split, s);
    return;
  }
  launch_any<false>(a.w.type, p, nt, tu, tiles, chunks, split, s);
}

int moe_tile_cols(int n_pairs, int n_expert) { return 8 * column_tiles((n_pairs + n_expert - 1) / n_expert); }

int moe_max_tiles(int n_pairs, int n_expert, int cols) { return (n_pairs + cols - 1) / cols + n_expert; }

void moe_group_pairs(const int32_t* ids, int n_pairs, int n_expert, const MoeTiles& t, const Launch& s) {
  if (n_expert < 1 || n_expert > kMaxGroupedExperts)
    throw Error("moe_group_pairs: " + std::to_string(n_expert) + " experts (1.." +
                std::to_string(kMaxGroupedExperts) + " supported)");
  if (t.max_tiles < moe_max_tiles(n_pairs, n_expert, t.cols))
    throw Error("moe_group_pairs: room for " + std::to_string(t.max_tiles) + " tiles, " +
                std::to_string(moe_max_tiles(n_pairs, n_expert, t.cols)) + " may be needed");
  LaunchShape shape;
  shape.grid = dim3(1);
  shape.block = dim3(1024);
  shape.smem = 2 * static_cast<size_t>(n_expert) * sizeof(int);
  launch_kernel(s, moe_group_kernel, shape, ids, n_pairs, n_expert, t.cols, t.max_tiles, t.order, t.tiles,
                t.n_tiles);
  PIPELLM_CUDA_LAUNCH_CHECK("moe_group_pairs");
}

bool mmq_supports_experts(const DeviceMatrix& w, size_t expert_bytes) {
  return mmq_supports(w) && expert_bytes % 16 == 0;  // each expert's blocks 16-byte aligned (asynchronous copies)
}

void mmq_experts(const MmqExpertArgs& a, const Launch& s) {
  if (!mmq_supports_experts(a.w, a.expert_bytes)) {
    check_supported(a.w);
    throw Error("mmq_experts: experts of " + std::to_string(a.expert_bytes) + " bytes are not 16-byte aligned");
  }
  if (a.n_pairs <= 0) return;
  Params p = params_of(a.w, a.xq, a.xds, a.y, a.y_stride);
  p.tiles = a.tiles.tiles;
  p.n_tiles = a.tiles.n_tiles;
  p.order = a.tiles.order;
  p.expert_bytes = static_cast<int64_t>(a.expert_bytes);
  p.x_group = a.x_group;
  const int64_t tiles = (a.w.n_out + kTileRows - 1) / kTileRows;
  const MmqTuning& tu = a.tuning;
  if (tu.f16 && tu.f16_experts && a.xh != nullptr && has_f16_kernel(a.w.type)) {
    p.xh = a.xh;
    launch_f16<true>(a.w.type, p, a.tiles.cols / 8, tu.f16_k_parts, tiles, a.tiles.max_tiles, 1, s);
    return;
  }
  launch_any<true>(a.w.type, p, a.tiles.cols / 8, tu, tiles, a.tiles.max_tiles, 1, s);
}

}  // namespace pipellm::cuda

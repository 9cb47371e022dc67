// What mmq's two kernels share (mmq_int8.cu, mmq_f16.cu; the host side of mmq.h in mmq.cu): a
// launch's parameters, the formats' raw bytes in shared memory and their copies, the segment choice
// of a fused launch, the cluster's fixed-order reduction, and each kernel's launcher.
#pragma once
#include <cooperative_groups.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "base/error.h"
#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/matvec_formats.cuh"
#include "kernels/cuda/mmq.h"

namespace pipellm::cuda::mmq_detail {

namespace cg = cooperative_groups;

constexpr int kTileRows = 64;       // weight rows per block
constexpr int kThreads = 128;       // the int8 kernel's block (4 warps x 16 rows)
constexpr int kK = 256;             // K per pipeline stage
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

// Q4_K and Q5_K share their 16-byte header (d, dmin, 12 bytes of 6-bit scales and minimums) and
// everything but the row size and the quants' unpacking (D::quants).
template <class D>
struct KQuantFmt {
  static constexpr int kExtra = 0, kSub = 32, kChunksPerBlock = 0;
  static constexpr bool kMin = true;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    return p.w + (row * p.nb + kc) * D::kRow + 16 * c;
  }
  __device__ static void copy_extra(const Params&, int64_t, int64_t, uint8_t*) {}
  __device__ static void frag(const uint8_t* r, const uint8_t*, int64_t, int j, int tig, int& lo, int& hi, float& sc,
                              float& mn) {
    D::quants(r, j, tig, lo, hi);
    scale_min(r, j, sc, mn);
  }
  // Sub-block j's scale and minimum from the block's first 16 bytes.
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
struct Fmt<TensorType::Q4_K> : KQuantFmt<Fmt<TensorType::Q4_K>> {  // GGUF blocks of 144 bytes: header, 128 of nibbles
  static constexpr int kRow = 144, kChunks = 9;
  __device__ static void quants(const uint8_t* r, int j, int tig, int& lo, int& hi) {
    const uint8_t* q = r + 16 + 32 * (j >> 1);
    const int sh = (j & 1) * 4;
    lo = static_cast<int>((ld32(q + 4 * tig) >> sh) & 0x0F0F0F0Fu);
    hi = static_cast<int>((ld32(q + 16 + 4 * tig) >> sh) & 0x0F0F0F0Fu);
  }
};

// GGUF blocks of 176 bytes: header, 32 of high bits, 128 of nibbles; as Q4_K's, with the fifth bit of
// element l of sub-block j in bit j of qh[l] (l < 32).
template <>
struct Fmt<TensorType::Q5_K> : KQuantFmt<Fmt<TensorType::Q5_K>> {
  static constexpr int kRow = 176, kChunks = 11;
  __device__ static void quants(const uint8_t* r, int j, int tig, int& lo, int& hi) {
    const uint8_t* q = r + 48 + 32 * (j >> 1);
    const int sh = (j & 1) * 4;
    lo = static_cast<int>(((ld32(q + 4 * tig) >> sh) & 0x0F0F0F0Fu) | (((ld32(r + 16 + 4 * tig) >> j) & 0x01010101u) << 4));
    hi = static_cast<int>(((ld32(q + 16 + 4 * tig) >> sh) & 0x0F0F0F0Fu) |
                          (((ld32(r + 32 + 4 * tig) >> j) & 0x01010101u) << 4));
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

// The 8 f16 scales of a K step of a row in the repacked Q8_0 / Q4_0 layouts (scales: their array
// after the values, one per block).
__device__ __forceinline__ void copy_half_scales(const uint8_t* scales, const Params& p, int64_t row, int64_t kc,
                                                 uint8_t* dst) {
  const uint8_t* s = scales + (row * p.nb + kc * 8) * 2;
  if (p.nb % 8 == 0) cp16(dst, s, true);
  else copy_scales_unaligned(reinterpret_cast<const uint16_t*>(s), p.nb - kc * 8, dst);
}

template <>
struct Fmt<TensorType::Q8_0> {  // repacked: [NB][32] int8, then [NB] f16 scales
  static constexpr int kRow = 272, kChunks = 16, kExtra = 16, kSub = 32, kChunksPerBlock = 2;
  static constexpr bool kMin = false;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    return p.w + (row * p.nb + kc * 8) * 32 + 16 * c;
  }
  __device__ static void copy_extra(const Params& p, int64_t row, int64_t kc, uint8_t* dst) {
    copy_half_scales(p.w + p.NB * 32, p, row, kc, dst);
  }
  __device__ static void frag(const uint8_t* r, const uint8_t* e, int64_t, int j, int tig, int& lo, int& hi, float& sc,
                              float& mn) {
    lo = static_cast<int>(ld32(r + 32 * j + 4 * tig));
    hi = static_cast<int>(ld32(r + 32 * j + 16 + 4 * tig));
    sc = half_at(e + 2 * j);
    mn = 0.0f;
  }
};

// Q4_0's repacked values, which MXFP4's share: [NB][16] nibbles (value j < 16 low, else high of
// byte j - 16), the block scales after them; the formats differ in the nibbles' values and scales.
struct NibbleRows {
  static constexpr int kRow = 144, kChunks = 8, kSub = 32, kChunksPerBlock = 1;
  static constexpr bool kMin = false;
  __device__ static const uint8_t* src(const Params& p, int64_t row, int64_t kc, int c) {
    return p.w + (row * p.nb + kc * 8) * 16 + 16 * c;
  }
};

template <>
struct Fmt<TensorType::Q4_0> : NibbleRows {  // [NB] f16 scales; values nibble - 8
  static constexpr int kExtra = 16;
  __device__ static void copy_extra(const Params& p, int64_t row, int64_t kc, uint8_t* dst) {
    copy_half_scales(p.w + p.NB * 16, p, row, kc, dst);
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
struct Fmt<TensorType::MXFP4> : NibbleRows {
  static constexpr int kExtra = 8;
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

// An expert product's block (after the wait on moe_group_pairs, whose tiles it reads): its tile's
// expert weights into p.w and, per column, the pair (dst_row) and its activation row (src_row); -1
// past the tile's pairs. False for a block past the tiles written.
template <int COLS, int THREADS>
__device__ bool take_expert_tile(Params& p, int* src_row, int* dst_row) {
  if (static_cast<int>(blockIdx.y) >= *p.n_tiles) return false;
  const int4 t = p.tiles[blockIdx.y];
  p.w += t.x * p.expert_bytes;
  for (int c = threadIdx.x; c < COLS; c += THREADS) {
    const int pair = c < t.z ? p.order[t.y + c] : -1;
    dst_row[c] = pair;
    src_row[c] = pair < 0 ? -1 : pair / p.x_group;
  }
  return true;
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

// Launches kernel k on (tiles, chunks, split) blocks of `threads` with `smem` bytes of dynamic
// shared memory, the K split as a thread-block cluster.
template <typename Kernel>
void launch_tiles_of(Kernel* k, int threads, int smem, const Params& p, int64_t tiles, int chunks, int split,
                     const Launch& s) {
  PIPELLM_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks), static_cast<unsigned>(split));
  shape.block = dim3(static_cast<unsigned>(threads));
  shape.smem = static_cast<size_t>(smem);
  shape.cluster_z = static_cast<unsigned>(split);
  launch_kernel(s, k, shape, p);
}

// Calls f(std::integral_constant<int, NT>) for nt column tiles of 8 (1, 2, 4 or 8).
template <typename F>
void with_column_tiles(int nt, F&& f) {
  switch (nt) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    default: throw Error("mmq: no kernel for " + std::to_string(nt) + " column tiles");
  }
}

// The kernels' launchers (kernel shape and tuning checked by the caller, mmq.cu): the int8 kernel
// for every mmq type (mmq_int8.cu), the f16 one for the types has_f16_kernel names (mmq_f16.cu).
// experts: p describes grouped expert products (tiles of pairs; no K split).
void launch_int8(TensorType t, bool experts, const Params& p, int nt, const MmqTuning& tu, int64_t tiles, int chunks,
                 int split, const Launch& s);
bool has_f16_kernel(TensorType t);
void launch_f16(TensorType t, bool experts, const Params& p, int nt, const MmqTuning& tu, int64_t tiles, int chunks,
                int split, const Launch& s);

}  // namespace pipellm::cuda::mmq_detail

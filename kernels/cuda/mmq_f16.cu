// mmq's f16 kernel (mmq.h, MmqTuning::f16): weights decoded to f16 in registers, f16 activation
// rows, m16n8k16 f16 products with f32 sums.
#include <string>
#include <type_traits>

#include "base/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mmq_tile.cuh"

namespace pipellm::cuda::mmq_detail {
namespace {

// The f16 variant (MmqTuning::f16): weights decoded in registers to f16 (each sub-block's
// scale and minimum applied there), activations as f16 rows, m16n8k16 f16 products with f32
// accumulators. The int8 kernel above spends ~22 instructions and 768 bytes of shared memory per
// m16n8k32 on activation loads and on scaling each product's integer sums into floats; here a
// decoded weight fragment serves every column tile and a warp's 32 rows (two m16 tiles) share each
// activation fragment: ~3.5 instructions and 128 bytes per m16n8k16 at 64 columns. 2 KP warps
// share a block's 64-row tile: two row halves times KP parts of each stage's K (2 or 4:
// MmqTuning::f16_k_parts; their sums added at the end in a fixed order), so that the
// shared-memory-bound block count still gives each SM 4 KP warps.

constexpr int kXhRow = 2 * kK + 32;  // bytes per f16 activation row in shared memory (pad: conflict-free 8-byte loads)

// Shared memory: a ring of kStages weight stages (the weights, then their extra array at kW), then
// a ring of kStages activation stages. (A deeper weight ring, 4 stages, measured slower on an H100:
// 16 sequences 2950 -> 2707 tok/s, 64 sequences 5586 -> 5097; bench/RESULTS.md.)
template <TensorType TT, int NT>
struct LayoutH {
  using F = Fmt<TT>;
  static constexpr int kCols = 8 * NT;
  static constexpr int kStages = NT <= 2 ? 3 : 2;
  static constexpr int kW = kTileRows * F::kRow;
  static constexpr int kE = (kTileRows * F::kExtra + 15) / 16 * 16;
  static constexpr int kWStage = kW + kE;
  static constexpr int kXStage = kCols * kXhRow;
  static constexpr int kXRing = kStages * kWStage;  // where the activation ring starts
  static constexpr int kRed = kCols * kTileRows * 4;
  static constexpr int kAll = kXRing + kStages * kXStage;
  static constexpr int kSmem = kAll > kRed ? kAll : kRed;
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
__device__ __forceinline__ void compute_stage_f16(const uint8_t* st, const uint8_t* x, int kp,
                                                  const int (&row)[2][2], const int64_t (&kbi)[2][2],
                                                  float (&acc)[2][NT][4]) {
  using F = Fmt<TT>;
  constexpr int kW = kTileRows * F::kRow;
  constexpr int G = kK / 32 / KP;
  const int lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
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
        DecodeH<TT>::run(st + row[m][rr] * F::kRow, st + kW + row[m][rr] * F::kExtra, kbi[m][rr], j, tig,
                         as_h2(sm), v[m][rr]);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint2 b = *reinterpret_cast<const uint2*>(x + (8 * nt + g) * kXhRow + 2 * (32 * j + 16 * h + 4 * tig));
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          mma_f16(acc[m][nt], v[m][0][2 * h], v[m][1][2 * h], v[m][0][2 * h + 1], v[m][1][2 * h + 1], b.x, b.y);
        }
      }
  }
}

// grid as mmq_kernel's: x = 64-row weight tiles (of every segment), y = chunks of 8 NT activation
// rows, z = the K split (a cluster); EXPERTS: y = tiles of pairs (one expert each), no split.
// Two blocks an SM (shared memory allows no more at 64 columns): caps 4 K parts at 128 registers.
template <TensorType TT, int NT, int KP, bool EXPERTS>
__global__ void __launch_bounds__(64 * KP, 2) mmq_f16_kernel(Params p) {
  using L = LayoutH<TT, NT>;
  constexpr int kHThreads = 64 * KP;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ int src_row[L::kCols], dst_row[L::kCols];  // per column: activation row, output row (-1: none)
  int64_t tile = blockIdx.x;
  if constexpr (EXPERTS) {
    grid_dependency_wait();  // the tiles come from the preceding kernel (moe_group_pairs)
    if (!take_expert_tile<L::kCols, kHThreads>(p, src_row, dst_row)) return;
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
  // The pipeline: one commit group per K step holds its weights and activations (the first group
  // also the weights of the steps up to kStages - 1, copied before the PDL wait).
  const auto w_slot = [&](int64_t i) { return smem + (i % L::kStages) * L::kWStage; };
  const auto x_slot = [&](int64_t i) { return smem + L::kXRing + (i % L::kStages) * L::kXStage; };
  for (int s = 0; s < L::kStages - 1; ++s) {
    if (s < n_steps) copy_weights<TT, kHThreads>(p, row0, k_begin + s, w_slot(s));
  }
  // Dense: weights before the wait on the preceding kernel (PDL), activations after.
  if constexpr (!EXPERTS) grid_dependency_wait();
  for (int s = 0; s < L::kStages - 1; ++s) {
    if (s < n_steps) copy_activations_f16<NT, kHThreads>(p, src_row, k_begin + s, x_slot(s));
    cp_commit();
  }
  float acc[2][NT][4] = {};
  for (int64_t i = 0; i < n_steps; ++i) {
    cp_wait<L::kStages - 2>();
    __syncthreads();  // step i has landed for all threads; step i - 1's slots are no longer read
    if (i + L::kStages - 1 < n_steps) {
      copy_weights<TT, kHThreads>(p, row0, k_begin + i + L::kStages - 1, w_slot(i - 1 + L::kStages));
      copy_activations_f16<NT, kHThreads>(p, src_row, k_begin + i + L::kStages - 1, x_slot(i - 1 + L::kStages));
    }
    cp_commit();
    const int64_t kc = k_begin + i;
    int64_t kbi[2][2];
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) kbi[m][rr] = grow[m][rr] * p.nb + kc;
    compute_stage_f16<TT, NT, KP>(w_slot(i), x_slot(i), warp >> 1, row, kbi, acc);
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

template <TensorType TT, int KP, bool EXPERTS>
void launch_f16_tiles(const Params& p, int nt, int64_t tiles, int chunks, int split, const Launch& s) {
  with_column_tiles(nt, [&](auto n) {
    using L = LayoutH<TT, decltype(n)::value>;
    launch_tiles_of(mmq_f16_kernel<TT, decltype(n)::value, KP, EXPERTS>, 64 * KP, L::kSmem, p, tiles, chunks, split,
                    s);
  });
}

template <bool EXPERTS>
void launch_f16_type(TensorType t, const Params& p, int nt, const MmqTuning& tu, int64_t tiles, int chunks, int split,
                     const Launch& s) {
  const auto parts = [&](auto tag) {
    constexpr TensorType TT = decltype(tag)::value;
    // 0: 4 parts at 64 columns, 2 below (MmqTuning::f16_k_parts).
    if (tu.f16_k_parts == 4 || (tu.f16_k_parts == 0 && nt == 8)) {
      launch_f16_tiles<TT, 4, EXPERTS>(p, nt, tiles, chunks, split, s);
    } else {
      launch_f16_tiles<TT, 2, EXPERTS>(p, nt, tiles, chunks, split, s);
    }
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

}  // namespace

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

void launch_f16(TensorType t, bool experts, const Params& p, int nt, const MmqTuning& tu, int64_t tiles, int chunks,
                int split, const Launch& s) {
  if (experts) launch_f16_type<true>(t, p, nt, tu, tiles, chunks, split, s);
  else launch_f16_type<false>(t, p, nt, tu, tiles, chunks, split, s);
}

}  // namespace pipellm::cuda::mmq_detail

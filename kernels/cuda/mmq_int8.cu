// mmq's int8 kernel (mmq.h): the weights' raw quantized bytes decoded straight into m16n8k32 s8
// fragments (m16n8k16 for Q6_K's 16-value scales), the activations as 8-bit blocks, each
// sub-block's integer sums scaled into float accumulators.
#include <string>

#include "base/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mmq_tile.cuh"

namespace pipellm::cuda::mmq_detail {
namespace {

constexpr int kXRow = kK + 16;  // bytes per activation row in shared memory (pad: no bank conflicts)

// An mma's int32 sum (|c| < 2^22: 32 products of 8-bit values) as float without the
// quarter-rate I2F: the integer lands in the mantissa of 1.5 * 2^23.
__device__ __forceinline__ float i2f(int c) { return __int_as_float(c + 0x4B400000) - 12582912.0f; }

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
    if (!take_expert_tile<L::kCols, kThreads>(p, src_row, dst_row)) return;
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

template <TensorType TT, bool EXPERTS, int ST, bool SHARE>
void launch_tiles(const Params& p, int nt, int64_t tiles, int chunks, int split, const Launch& s) {
  with_column_tiles(nt, [&](auto n) {
    using L = Layout<TT, decltype(n)::value, ST>;
    launch_tiles_of(mmq_kernel<TT, decltype(n)::value, EXPERTS, ST, SHARE>, kThreads, L::kSmem, p, tiles, chunks, split,
                    s);
  });
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

}  // namespace

void launch_int8(TensorType t, bool experts, const Params& p, int nt, const MmqTuning& tu, int64_t tiles, int chunks,
                 int split, const Launch& s) {
  if (experts) launch_any<true>(t, p, nt, tu, tiles, chunks, split, s);
  else launch_any<false>(t, p, nt, tu, tiles, chunks, split, s);
}

}  // namespace pipellm::cuda::mmq_detail

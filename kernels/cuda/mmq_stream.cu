#include "kernels/cuda/mmq_stream.h"

#include <cuda_fp16.h>

#include <string>

#include "base/error.h"
#include "kernels/cuda/cuda_check.h"

namespace pipellm::cuda {
namespace {

constexpr int kWarps = 8;  // split K: warp w takes items w, w + 8, ...
constexpr int kThreads = 32 * kWarps;
constexpr int kItem = 256;        // K values per item (one K-quant super-block, eight 32-blocks)
constexpr int kMaxSegments = 1 + kMmqMaxExtra;

struct Params {
  struct Segment {
    const uint8_t* w;
    int64_t NB, n_out;
    float* y;
    int64_t ys, tile0;  // tile0: this matrix's first block along grid x
  };
  Segment seg[kMaxSegments];
  int n_seg;
  int64_t nb;  // blocks of the type per weight row
  int64_t n_in;
  int T;
  const int8_t* xq;
  const float2* xds;
  bool add;
};

__device__ __forceinline__ uint32_t ldg32(const uint8_t* p) { return __ldg(reinterpret_cast<const unsigned*>(p)); }
__device__ __forceinline__ uint2 ldg64(const uint8_t* p) { return __ldg(reinterpret_cast<const uint2*>(p)); }
__device__ __forceinline__ uint4 ldg128(const uint8_t* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ float half_bits(uint32_t h) { return __half2float(__ushort_as_half(static_cast<unsigned short>(h))); }

// An mma's int32 sum (|c| < 2^22) as float without the quarter-rate I2F (as in mmq.cu).
__device__ __forceinline__ float i2f(int c) { return __int_as_float(c + 0x4B400000) - 12582912.0f; }

// ---- formats: what lane (g, tig) loads of weight row g of a fragment for one item, the B
// fragment of each mma step, and the scales (and minimums) its row contributes ----
//
// kSteps    mma steps per item: 8 of K 32, or 16 of K 16 (Q6_K, whose scales cover 16 values)
// kPerm     (K 32 steps) the lane's 8 values are positions 8 tig .. 8 tig + 7 of the 32-block
//           (b0 the first four, b1 the rest) and the activations are read the same way; else the
//           mma's own order (b0: 4 tig .., b1: 16 + 4 tig ..)
// kPer      scales per lane: lane tig of a row holds those of steps kPer tig .. kPer tig + kPer - 1
// load(w, NB, nb, row, item, tig) -> Raw;  own(Raw, tig, sc, mn);  frag(Raw, j, tig, b0, b1)

__device__ __forceinline__ int k_byte(const uint4& hd, int i) {  // byte i of the 12 scale bytes (no local copy)
  const uint32_t w = i < 4 ? hd.y : (i < 8 ? hd.z : hd.w);
  return static_cast<int>((w >> (8 * (i & 3))) & 0xFF);
}

// Sub-block j's scale and minimum (times d and dmin) from a K-quant block's first 16 bytes.
__device__ __forceinline__ void k_scale_min(const uint4& hd, int j, float& sc, float& mn) {
  int scv, mv;
  if (j < 4) {
    scv = k_byte(hd, j) & 63;
    mv = k_byte(hd, j + 4) & 63;
  } else {
    scv = (k_byte(hd, j + 4) & 0xF) | ((k_byte(hd, j - 4) >> 6) << 4);
    mv = (k_byte(hd, j + 4) >> 4) | ((k_byte(hd, j) >> 6) << 4);
  }
  const float2 dd = __half22float2(*reinterpret_cast<const __half2*>(&hd.x));
  sc = dd.x * static_cast<float>(scv);
  mn = dd.y * static_cast<float>(mv);
}

// The two f16 scales of a 32-block format's lane (blocks 2 tig and 2 tig + 1), no minimums.
__device__ __forceinline__ void two_scales(uint32_t d2, float (&sc)[2], float (&mn)[2]) {
  sc[0] = half_bits(d2 & 0xFFFFu);
  sc[1] = half_bits(d2 >> 16);
  mn[0] = mn[1] = 0.0f;
}

template <TensorType TT>
struct SF;

template <>
struct SF<TensorType::Q4_K> {  // GGUF blocks of 144 bytes: d, dmin, 12 bytes of scales and mins, 128 of nibbles
  static constexpr int kSteps = 8, kPer = 2;
  static constexpr bool kPerm = true, kMin = true;
  struct Raw {
    uint2 q[4];  // bytes 32 m + 8 tig .. + 7 of the nibbles: sub-blocks 2m (low) and 2m + 1 (high)
    uint4 hd;
  };
  __device__ static Raw load(const uint8_t* w, int64_t, int64_t nb, int64_t row, int64_t item, int tig) {
    const uint8_t* b = w + (row * nb + item) * 144;
    Raw r;
#pragma unroll
    for (int m = 0; m < 4; ++m) r.q[m] = ldg64(b + 16 + 32 * m + 8 * tig);
    r.hd = ldg128(b);
    return r;
  }
  __device__ static void own(const Raw& r, int tig, float (&sc)[kPer], float (&mn)[kPer]) {
#pragma unroll
    for (int h = 0; h < kPer; ++h) k_scale_min(r.hd, kPer * tig + h, sc[h], mn[h]);
  }
  __device__ static void frag(const Raw& r, int j, int, int& b0, int& b1) {
    const int sh = (j & 1) * 4;
    b0 = static_cast<int>((r.q[j >> 1].x >> sh) & 0x0F0F0F0Fu);
    b1 = static_cast<int>((r.q[j >> 1].y >> sh) & 0x0F0F0F0Fu);
  }
};

template <>
struct SF<TensorType::Q5_K> {  // 176 bytes: d, dmin, 12 bytes of scales, qh[32], qs[128]
  static constexpr int kSteps = 8, kPer = 2;
  static constexpr bool kPerm = true, kMin = true;
  struct Raw {
    uint2 q[4];
    uint2 qh;  // qh[8 tig .. 8 tig + 7]: bit j of qh[l] is the fifth bit of position l of sub-block j
    uint4 hd;
  };
  __device__ static Raw load(const uint8_t* w, int64_t, int64_t nb, int64_t row, int64_t item, int tig) {
    const uint8_t* b = w + (row * nb + item) * 176;
    Raw r;
#pragma unroll
    for (int m = 0; m < 4; ++m) r.q[m] = ldg64(b + 48 + 32 * m + 8 * tig);
    r.qh = ldg64(b + 16 + 8 * tig);
    r.hd = ldg128(b);
    return r;
  }
  __device__ static void own(const Raw& r, int tig, float (&sc)[kPer], float (&mn)[kPer]) {
#pragma unroll
    for (int h = 0; h < kPer; ++h) k_scale_min(r.hd, kPer * tig + h, sc[h], mn[h]);
  }
  __device__ static void frag(const Raw& r, int j, int, int& b0, int& b1) {
    const int sh = (j & 1) * 4;
    b0 = static_cast<int>(((r.q[j >> 1].x >> sh) & 0x0F0F0F0Fu) | (((r.qh.x >> j) & 0x01010101u) << 4));
    b1 = static_cast<int>(((r.q[j >> 1].y >> sh) & 0x0F0F0F0Fu) | (((r.qh.y >> j) & 0x01010101u) << 4));
  }
};

template <>
struct SF<TensorType::Q8_0> {  // repacked: [NB][32] int8, then [NB] f16
  static constexpr int kSteps = 8, kPer = 2;
  static constexpr bool kPerm = true, kMin = false;
  struct Raw {
    uint2 q[8];   // block j of the item: bytes 8 tig .. 8 tig + 7
    uint32_t d2;  // the f16 scales of blocks 2 tig and 2 tig + 1
  };
  __device__ static Raw load(const uint8_t* w, int64_t NB, int64_t nb, int64_t row, int64_t item, int tig) {
    const int64_t bi = row * nb + item * 8;
    Raw r;
#pragma unroll
    for (int j = 0; j < 8; ++j) r.q[j] = ldg64(w + (bi + j) * 32 + 8 * tig);
    r.d2 = ldg32(w + NB * 32 + (bi + 2 * tig) * 2);
    return r;
  }
  __device__ static void own(const Raw& r, int, float (&sc)[kPer], float (&mn)[kPer]) { two_scales(r.d2, sc, mn); }
  __device__ static void frag(const Raw& r, int j, int, int& b0, int& b1) {
    b0 = static_cast<int>(r.q[j].x);
    b1 = static_cast<int>(r.q[j].y);
  }
};

template <>
struct SF<TensorType::Q4_0> {  // repacked: [NB][16] nibbles (value l < 16: low nibble of byte l, else high of l - 16), [NB] f16
  static constexpr int kSteps = 8, kPer = 2;
  static constexpr bool kPerm = false, kMin = false;
  struct Raw {
    uint32_t q[8];  // block j: bytes 4 tig .. 4 tig + 3 (values 4 tig .. and 16 + 4 tig ..)
    uint32_t d2;
  };
  __device__ static Raw load(const uint8_t* w, int64_t NB, int64_t nb, int64_t row, int64_t item, int tig) {
    const int64_t bi = row * nb + item * 8;
    Raw r;
#pragma unroll
    for (int j = 0; j < 8; ++j) r.q[j] = ldg32(w + (bi + j) * 16 + 4 * tig);
    r.d2 = ldg32(w + NB * 16 + (bi + 2 * tig) * 2);
    return r;
  }
  __device__ static void own(const Raw& r, int, float (&sc)[kPer], float (&mn)[kPer]) { two_scales(r.d2, sc, mn); }
  __device__ static void frag(const Raw& r, int j, int, int& b0, int& b1) {
    b0 = static_cast<int>(__vsub4(r.q[j] & 0x0F0F0F0Fu, 0x08080808u));
    b1 = static_cast<int>(__vsub4((r.q[j] >> 4) & 0x0F0F0F0Fu, 0x08080808u));
  }
};

// Q6_K (repacked: ql [NB][128], qh [NB][64], scales [NB][16] int8, d [NB] f16). Step s covers
// values 16 s ..: 128 n + 32 qq + l with n = s / 8, qq = (s % 8) / 2, l = 16 (s % 2) + 4 tig + i
// for the lane: 4 bits of ql[64 n + 32 (qq & 1) + l] (low for qq < 2) and 2 bits of qh[32 n + l]
// at 2 qq, minus 32; scale s.
template <>
struct SF<TensorType::Q6_K> {
  static constexpr int kSteps = 16, kPer = 4;
  static constexpr bool kMin = false;
  struct Raw {
    uint32_t ql[8];  // [n][qq & 1][l / 16]
    uint32_t qh[4];  // [n][l / 16]: i = 2 n + l / 16
    uint32_t sc4;    // scales 4 tig .. 4 tig + 3
    uint32_t d;      // f16 bits
  };
  __device__ static Raw load(const uint8_t* w, int64_t NB, int64_t nb, int64_t row, int64_t item, int tig) {
    const int64_t bi = row * nb + item;
    Raw r;
#pragma unroll
    for (int i = 0; i < 8; ++i) r.ql[i] = ldg32(w + bi * 128 + 16 * i + 4 * tig);  // i = 4 n + 2 (qq & 1) + l / 16
#pragma unroll
    for (int i = 0; i < 4; ++i) r.qh[i] = ldg32(w + NB * 128 + bi * 64 + 16 * i + 4 * tig);
    r.sc4 = ldg32(w + NB * 192 + bi * 16 + 4 * tig);
    r.d = __ldg(reinterpret_cast<const unsigned short*>(w + NB * 208 + bi * 2));
    return r;
  }
  __device__ static void own(const Raw& r, int, float (&sc)[kPer], float (&mn)[kPer]) {
    const float d = half_bits(r.d);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      sc[i] = d * static_cast<float>(static_cast<int8_t>((r.sc4 >> (8 * i)) & 0xFF));
      mn[i] = 0.0f;
    }
  }
  __device__ static void frag(const Raw& r, int s, int, int& b0, int&) {
    const int n = s >> 3, qq = (s & 7) >> 1, h = s & 1;
    const uint32_t a = r.ql[(2 * n + (qq & 1)) * 2 + h];
    const uint32_t nib = (qq < 2 ? a : a >> 4) & 0x0F0F0F0Fu;
    b0 = static_cast<int>(__vsub4(nib | (((r.qh[2 * n + h] >> (2 * qq)) & 0x03030303u) << 4), 0x20202020u));
  }
};

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

// One item of the warp: MT tiles of 16 activation rows times the block's R fragments of 8
// weight rows. acc[mt][n]: {(row g, weight row 2 tig), (g, 2 tig + 1), (g + 8, 2 tig), (g + 8, 2 tig + 1)}
// of activation tile mt and weight fragment n.
template <TensorType TT, int MT, int R>
__device__ __forceinline__ void multiply_item(const Params& p, const typename SF<TT>::Raw (&raw)[R], int64_t item,
                                              const int (&tok)[MT][2], float (&acc)[MT][R][4]) {
  using F = SF<TT>;
  const int lane = threadIdx.x & 31, tig = lane & 3;
  float sc[R][F::kPer], mn[R][F::kPer];
#pragma unroll
  for (int n = 0; n < R; ++n) F::own(raw[n], tig, sc[n], mn[n]);
  const int64_t nblk = p.n_in / 32;
#pragma unroll
  for (int j = 0; j < F::kSteps; ++j) {
    constexpr int kVals = F::kSteps == 8 ? 32 : 16;
    const int blk = j * kVals / 32;  // the activations' 32-block within the item
    int a[MT][4];
    float2 xs[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int8_t* x = p.xq + tok[mt][h] * p.n_in + item * kItem + j * kVals;
        if constexpr (F::kSteps == 16) {
          a[mt][h] = static_cast<int>(ldg32(reinterpret_cast<const uint8_t*>(x) + 4 * tig));
        } else if constexpr (F::kPerm) {
          const uint2 v = ldg64(reinterpret_cast<const uint8_t*>(x) + 8 * tig);
          a[mt][h] = static_cast<int>(v.x);
          a[mt][h + 2] = static_cast<int>(v.y);
        } else {
          a[mt][h] = static_cast<int>(ldg32(reinterpret_cast<const uint8_t*>(x) + 4 * tig));
          a[mt][h + 2] = static_cast<int>(ldg32(reinterpret_cast<const uint8_t*>(x) + 16 + 4 * tig));
        }
        xs[mt][h] = __ldg(p.xds + tok[mt][h] * nblk + item * 8 + blk);
      }
    }
#pragma unroll
    for (int n = 0; n < R; ++n) {
      int b0, b1 = 0;
      F::frag(raw[n], j, tig, b0, b1);
      // Weight rows 2 tig and 2 tig + 1 of the fragment: their step-j scales live in lanes
      // 4 r + j / kPer (entry j % kPer).
      const int src0 = 8 * tig + j / F::kPer, src1 = src0 + 4;
      const float s0 = __shfl_sync(0xffffffffu, sc[n][j % F::kPer], src0);
      const float s1 = __shfl_sync(0xffffffffu, sc[n][j % F::kPer], src1);
      float m0 = 0.0f, m1 = 0.0f;
      if constexpr (F::kMin) {
        m0 = __shfl_sync(0xffffffffu, mn[n][j % F::kPer], src0);
        m1 = __shfl_sync(0xffffffffu, mn[n][j % F::kPer], src1);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        int c[4];
        if constexpr (F::kSteps == 16) {
          mma_k16(c, a[mt][0], a[mt][1], b0);
        } else {
          mma_k32(c, a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
        }
        acc[mt][n][0] = fmaf(i2f(c[0]), s0 * xs[mt][0].x, acc[mt][n][0]);
        acc[mt][n][1] = fmaf(i2f(c[1]), s1 * xs[mt][0].x, acc[mt][n][1]);
        acc[mt][n][2] = fmaf(i2f(c[2]), s0 * xs[mt][1].x, acc[mt][n][2]);
        acc[mt][n][3] = fmaf(i2f(c[3]), s1 * xs[mt][1].x, acc[mt][n][3]);
        if constexpr (F::kMin) {
          acc[mt][n][0] = fmaf(-m0, xs[mt][0].y, acc[mt][n][0]);
          acc[mt][n][1] = fmaf(-m1, xs[mt][0].y, acc[mt][n][1]);
          acc[mt][n][2] = fmaf(-m0, xs[mt][1].y, acc[mt][n][2]);
          acc[mt][n][3] = fmaf(-m1, xs[mt][1].y, acc[mt][n][3]);
        }
      }
    }
  }
}

// grid x: blocks of 8 R weight rows (the segments' one after another); T <= 16 MT. R = 2 for one
// activation tile, 1 for more (registers: two items of R fragments are in flight per lane).
template <TensorType TT, int MT, int R>
__global__ void __launch_bounds__(kThreads, 2) mmq_stream_kernel(Params p) {
  using F = SF<TT>;
  constexpr int kRows = 8 * R;
  __shared__ float red[kWarps][16 * MT][kRows];
  int64_t tile = blockIdx.x;
  int sel = 0;
#pragma unroll
  for (int i = 1; i < kMaxSegments; ++i)
    if (i < p.n_seg && tile >= p.seg[i].tile0) sel = i;
  const uint8_t* w = nullptr;
  int64_t NB = 0, n_out = 0, ys = 0;
  float* y = nullptr;
#pragma unroll
  for (int i = 0; i < kMaxSegments; ++i) {  // static indices: the segments stay in parameter space
    if (i == sel) {
      w = p.seg[i].w;
      NB = p.seg[i].NB;
      n_out = p.seg[i].n_out;
      y = p.seg[i].y;
      ys = p.seg[i].ys;
      tile -= p.seg[i].tile0;
    }
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
  const int64_t row0 = tile * kRows;
  int64_t wrow[R];  // the weight row this lane loads in each fragment (past the end: the last row, never stored)
#pragma unroll
  for (int n = 0; n < R; ++n) wrow[n] = min(row0 + 8 * n + g, n_out - 1);
  int tok[MT][2];  // activation rows of the lane's A fragments (past T: the last row, never stored)
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    tok[mt][0] = min(16 * mt + g, p.T - 1);
    tok[mt][1] = min(16 * mt + g + 8, p.T - 1);
  }
  const int64_t n_items = p.n_in / kItem;
  float acc[MT][R][4] = {};
  typename F::Raw cur[R];
  int64_t item = warp;
  // Weights never depend on the preceding kernel: the first item is requested before the wait
  // on it (PDL), the activations after.
  if (item < n_items) {
#pragma unroll
    for (int n = 0; n < R; ++n) cur[n] = F::load(w, NB, p.nb, wrow[n], item, tig);
  }
  grid_dependency_wait();
  for (; item < n_items; item += kWarps) {
    typename F::Raw nxt[R];
    const bool more = item + kWarps < n_items;
    if (more) {
#pragma unroll
      for (int n = 0; n < R; ++n) nxt[n] = F::load(w, NB, p.nb, wrow[n], item + kWarps, tig);
    }
    multiply_item<TT, MT, R>(p, cur, item, tok, acc);
    if (more) {
#pragma unroll
      for (int n = 0; n < R; ++n) cur[n] = nxt[n];
    }
  }
  // The warps' partial sums, added in warp order (a fixed order: bit-stable).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int n = 0; n < R; ++n) {
#pragma unroll
      for (int k = 0; k < 4; ++k) red[warp][16 * mt + g + 8 * (k >> 1)][8 * n + 2 * tig + (k & 1)] = acc[mt][n][k];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < 16 * MT * kRows; e += kThreads) {
    const int t = e / kRows, r = e % kRows;
    const int64_t row = row0 + r;
    if (t >= p.T || row >= n_out) continue;
    float v = 0.0f;
#pragma unroll
    for (int q = 0; q < kWarps; ++q) v += red[q][t][r];
    float* o = y + static_cast<int64_t>(t) * ys + row;
    *o = p.add ? *o + v : v;
  }
}

// Weight rows per block for T activation rows.
int block_rows(int T) { return T <= 16 ? 16 : 8; }

template <TensorType TT>
void launch_type(const Params& p, int64_t blocks, const Launch& s) {
  LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(blocks));
  shape.block = dim3(kThreads);
  if (p.T <= 16) launch_kernel(s, mmq_stream_kernel<TT, 1, 2>, shape, p);
  else if (p.T <= 32) launch_kernel(s, mmq_stream_kernel<TT, 2, 1>, shape, p);
  else launch_kernel(s, mmq_stream_kernel<TT, 4, 1>, shape, p);
}

}  // namespace

bool mmq_stream_supports(TensorType t) {
  switch (t) {
    case TensorType::Q4_0:
    case TensorType::Q8_0:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K: return true;
    default: return false;
  }
}

void mmq_stream(const MmqArgs& a, const Launch& s) {
  if (a.n_rows < 1 || a.n_rows > kMmqStreamMaxRows) {
    throw Error("mmq_stream: " + std::to_string(a.n_rows) + " activation rows (1.." +
                std::to_string(kMmqStreamMaxRows) + ")");
  }
  if (a.w.n_in % kItem != 0) throw Error("mmq_stream: n_in " + std::to_string(a.w.n_in) + " is not a multiple of 256");
  Params p{};
  p.nb = a.w.n_in / tensor_type_info(a.w.type).block_size;
  p.n_in = a.w.n_in;
  p.T = a.n_rows;
  p.xq = a.xq;
  p.xds = a.xds;
  p.add = a.add;
  p.n_seg = 1 + a.n_extra;
  int64_t blocks = 0;
  for (int i = 0; i < p.n_seg; ++i) {
    const MmqSegment sg = i == 0 ? MmqSegment{a.w, a.y, a.y_stride} : a.extra[i - 1];
    p.seg[i] = {sg.w.data, sg.w.blocks(), sg.w.n_out, sg.y, sg.y_stride, blocks};
    blocks += (sg.w.n_out + block_rows(p.T) - 1) / block_rows(p.T);
  }
  if (blocks > 0x7fffffff) throw Error("mmq_stream: product too large for one launch");
  switch (a.w.type) {
    case TensorType::Q4_0: launch_type<TensorType::Q4_0>(p, blocks, s); break;
    case TensorType::Q8_0: launch_type<TensorType::Q8_0>(p, blocks, s); break;
    case TensorType::Q4_K: launch_type<TensorType::Q4_K>(p, blocks, s); break;
    case TensorType::Q5_K: launch_type<TensorType::Q5_K>(p, blocks, s); break;
    case TensorType::Q6_K: launch_type<TensorType::Q6_K>(p, blocks, s); break;
    default: throw Error(std::string("mmq_stream: no kernel for ") + tensor_type_name(a.w.type));
  }
  PIPELLM_CUDA_LAUNCH_CHECK("mmq_stream");
}

}  // namespace pipellm::cuda

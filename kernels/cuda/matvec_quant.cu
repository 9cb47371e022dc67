#include "kernels/cuda/matvec_quant.h"

#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dequant_device.cuh"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kWarps = 4;  // generic kernel: rows per block (a warp each); fast kernels: warps per row
constexpr int kThreads = kWarps * 32;

__device__ __forceinline__ float silu(float g) { return g / (1.0f + __expf(-g)); }

__device__ __forceinline__ int dp4(int a, int b, int c) { return __dp4a(a, b, c); }

// Parameters of the fast kernels: one block per output row; up to 3 matrices of the same type
// and n_in ("segments", e.g. q, k and v) share one launch, block b computing row b of the
// concatenated outputs.
struct FastParams {
  const uint8_t* w[3];
  const uint8_t* w2;  // Swiglu: the up matrix (one segment only)
  float* y[3];
  int64_t y_stride[3];
  int64_t n_out[3];
  int64_t n_in;
  const int8_t* xq;
  const float2* xds;
  MatvecMode mode;
};

struct RowRef {
  const uint8_t* w;
  const uint8_t* w2;
  float* y;
  int64_t ys;
  int64_t n_out;
  int64_t row;
};

__device__ __forceinline__ RowRef locate_row(const FastParams& p) {
  grid_dependency_wait();
  int64_t r = blockIdx.x;
  int s = 0;
  if (r >= p.n_out[0]) {
    r -= p.n_out[0];
    s = 1;
    if (r >= p.n_out[1]) {
      r -= p.n_out[1];
      s = 2;
    }
  }
  return RowRef{p.w[s], p.w2, p.y[s], p.y_stride[s], p.n_out[s], r};
}

// Reduces acc over the block (all kThreads threads call) and writes the row for every
// activation row.
template <int B>
__device__ __forceinline__ void block_epilogue(float (&acc)[B], float (&acc2)[B], MatvecMode mode, const RowRef& rr) {
  __shared__ float red[kWarps][B], red2[kWarps][B];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const float v = warp_sum(acc[b]);
    const float v2 = mode == MatvecMode::Swiglu ? warp_sum(acc2[b]) : 0.0f;
    if (lane == 0) {
      red[warp][b] = v;
      red2[warp][b] = v2;
    }
  }
  __syncthreads();
  const int b = threadIdx.x;
  if (b >= B) return;
  float v = 0.0f, v2 = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    v += red[w][b];
    v2 += red2[w][b];
  }
  float* o = rr.y + b * rr.ys + rr.row;
  if (mode == MatvecMode::Store) *o = v;
  else if (mode == MatvecMode::Add) *o += v;
  else *o = silu(v) * v2;
}

// ---- generic: decode each weight to float ----

template <TensorType T>
__global__ void __launch_bounds__(kThreads) matvec_generic(const uint8_t* w, const uint8_t* w2, int64_t n_in,
                                                           int64_t n_out, int64_t nb, int nrows, const float* x,
                                                           MatvecMode mode, float* y, int64_t ys) {
  grid_dependency_wait();
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= n_out) return;
  constexpr int bs = TypeTraits<T>::block_size;
  const int64_t bpr = n_in / bs;
  float acc[kMatvecMaxRows] = {}, acc2[kMatvecMaxRows] = {};
  for (int64_t c = threadIdx.x & 31; c < n_in; c += 32) {
    const int64_t bi = row * bpr + c / bs;
    const int j = static_cast<int>(c % bs);
    const float v = deq<T>(w, nb, bi, j);
    const float v2 = mode == MatvecMode::Swiglu ? deq<T>(w2, nb, bi, j) : 0.0f;
#pragma unroll
    for (int b = 0; b < kMatvecMaxRows; ++b) {
      if (b < nrows) {
        const float xv = x[b * n_in + c];
        acc[b] += v * xv;
        acc2[b] += v2 * xv;
      }
    }
  }
#pragma unroll
  for (int b = 0; b < kMatvecMaxRows; ++b) {
    acc[b] = warp_sum(acc[b]);
    if (mode == MatvecMode::Swiglu) acc2[b] = warp_sum(acc2[b]);
  }
  if ((threadIdx.x & 31) != 0) return;
  for (int b = 0; b < nrows; ++b) {
    float* o = y + b * ys + row;
    if (mode == MatvecMode::Store) *o = acc[b];
    else if (mode == MatvecMode::Add) *o += acc[b];
    else *o = silu(acc[b]) * acc2[b];
  }
}

// ---- Q4_K (block layout kept): 8 lanes per super-block, 16 bytes of quants each ----
// Lane t (0..7) of a super-block covers qs[16t..16t+15]: low nibbles are sub-block 2j
// (elements 64j + l0 .. +15), high nibbles sub-block 2j+1 (+32), j = t/2, l0 = 16*(t%2).

__device__ __forceinline__ int byte_of(uint32_t s0, uint32_t s1, uint32_t s2, int i) {
  const uint32_t w = i < 4 ? s0 : (i < 8 ? s1 : s2);
  return static_cast<int>((w >> (8 * (i & 3))) & 0xFF);
}

__device__ __forceinline__ void k4_scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int j, int& sc, int& m) {
  if (j < 4) {
    sc = byte_of(s0, s1, s2, j) & 63;
    m = byte_of(s0, s1, s2, j + 4) & 63;
  } else {
    sc = (byte_of(s0, s1, s2, j + 4) & 0xF) | ((byte_of(s0, s1, s2, j - 4) >> 6) << 4);
    m = (byte_of(s0, s1, s2, j + 4) >> 4) | ((byte_of(s0, s1, s2, j) >> 6) << 4);
  }
}

template <int B>
__device__ __forceinline__ void q4k_block(const uint8_t* blk, int t, int64_t abase, int64_t n_in, const int8_t* xq,
                                          const float2* xds, float (&acc)[B]) {
  const int j = t >> 1, l0 = (t & 1) * 16;
  const uint4 v = *reinterpret_cast<const uint4*>(blk + 16 + 16 * t);
  const uint4 hd = *reinterpret_cast<const uint4*>(blk);  // d, dmin, scales[12]
  const __half2 dm = *reinterpret_cast<const __half2*>(&hd.x);
  const float d = __low2float(dm), dmin = __high2float(dm);
  int sc_lo, m_lo, sc_hi, m_hi;
  k4_scale_min(hd.y, hd.z, hd.w, 2 * j, sc_lo, m_lo);
  k4_scale_min(hd.y, hd.z, hd.w, 2 * j + 1, sc_hi, m_hi);
  const int lo0 = v.x & 0x0F0F0F0F, lo1 = v.y & 0x0F0F0F0F, lo2 = v.z & 0x0F0F0F0F, lo3 = v.w & 0x0F0F0F0F;
  const int hi0 = (v.x >> 4) & 0x0F0F0F0F, hi1 = (v.y >> 4) & 0x0F0F0F0F, hi2 = (v.z >> 4) & 0x0F0F0F0F,
            hi3 = (v.w >> 4) & 0x0F0F0F0F;
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const int8_t* xa = xq + b * n_in + abase + 64 * j + l0;
    const int4 alo = *reinterpret_cast<const int4*>(xa);
    const int4 ahi = *reinterpret_cast<const int4*>(xa + 32);
    const int si_lo = dp4(lo3, alo.w, dp4(lo2, alo.z, dp4(lo1, alo.y, dp4(lo0, alo.x, 0))));
    const int si_hi = dp4(hi3, ahi.w, dp4(hi2, ahi.z, dp4(hi1, ahi.y, dp4(hi0, ahi.x, 0))));
    const float2* ds = xds + b * (n_in / 32) + abase / 32 + 2 * j;
    const float2 dlo = ds[0], dhi = ds[1];
    float r = d * (static_cast<float>(sc_lo) * dlo.x * static_cast<float>(si_lo) +
                   static_cast<float>(sc_hi) * dhi.x * static_cast<float>(si_hi));
    if ((t & 1) == 0) r -= dmin * (static_cast<float>(m_lo) * dlo.y + static_cast<float>(m_hi) * dhi.y);
    acc[b] += r;
  }
}

template <int B, bool DUAL>
__global__ void __launch_bounds__(kThreads) matvec_q4k(FastParams p) {
  const RowRef rr = locate_row(p);
  const int t = threadIdx.x & 7;
  const int64_t n_in = p.n_in, nb = n_in / 256;
  const uint8_t* wr = rr.w + rr.row * nb * 144;
  const uint8_t* wr2 = DUAL ? rr.w2 + rr.row * nb * 144 : nullptr;
  float acc[B] = {}, acc2[B] = {};
#pragma unroll 2
  for (int64_t ib = threadIdx.x >> 3; ib < nb; ib += kThreads / 8) {
    q4k_block<B>(wr + ib * 144, t, ib * 256, n_in, p.xq, p.xds, acc);
    if (DUAL) q4k_block<B>(wr2 + ib * 144, t, ib * 256, n_in, p.xq, p.xds, acc2);
  }
  block_epilogue<B>(acc, acc2, p.mode, rr);
}

// ---- Q6_K (repacked): 8 lanes per super-block ----
// Lane t: n = t/4 (half of 128), s = t%4; l0 = 16*(s&1); low nibbles are quarter q = s/2,
// high nibbles quarter q+2; element index 128n + 32*quarter + l0 + (0..15).

template <int B>
__device__ __forceinline__ void q6k_block(const uint8_t* w, int64_t NB, int64_t bi, int t, int64_t abase, int64_t n_in,
                                          const int8_t* xq, const float2* xds, float (&acc)[B]) {
  const int n = t >> 2, s = t & 3, l0 = (s & 1) * 16, q = s >> 1;
  const uint4 ql = *reinterpret_cast<const uint4*>(w + bi * 128 + 64 * n + 32 * q + l0);
  const uint4 qh = *reinterpret_cast<const uint4*>(w + NB * 128 + bi * 64 + 32 * n + l0);
  const int8_t* scp = reinterpret_cast<const int8_t*>(w + NB * 192 + bi * 16 + 8 * n + (s & 1) + 2 * q);
  const float sc_lo = static_cast<float>(scp[0]), sc_hi = static_cast<float>(scp[4]);
  const float d = f16_bits(*reinterpret_cast<const uint16_t*>(w + NB * 208 + bi * 2));
  const int shl = 2 * q, shh = 2 * q + 4;
  int lo[4], hi[4];
  const uint32_t qlv[4] = {ql.x, ql.y, ql.z, ql.w}, qhv[4] = {qh.x, qh.y, qh.z, qh.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    lo[i] = __vsub4((qlv[i] & 0x0F0F0F0F) | (((qhv[i] >> shl) & 0x03030303) << 4), 0x20202020);
    hi[i] = __vsub4(((qlv[i] >> 4) & 0x0F0F0F0F) | (((qhv[i] >> shh) & 0x03030303) << 4), 0x20202020);
  }
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const int8_t* xa = xq + b * n_in + abase + 128 * n + 32 * q + l0;
    const int4 alo = *reinterpret_cast<const int4*>(xa);
    const int4 ahi = *reinterpret_cast<const int4*>(xa + 64);
    const int si_lo = dp4(lo[3], alo.w, dp4(lo[2], alo.z, dp4(lo[1], alo.y, dp4(lo[0], alo.x, 0))));
    const int si_hi = dp4(hi[3], ahi.w, dp4(hi[2], ahi.z, dp4(hi[1], ahi.y, dp4(hi[0], ahi.x, 0))));
    const float2* ds = xds + b * (n_in / 32) + abase / 32 + 4 * n + q;
    acc[b] += d * (sc_lo * ds[0].x * static_cast<float>(si_lo) + sc_hi * ds[2].x * static_cast<float>(si_hi));
  }
}

template <int B, bool DUAL>
__global__ void __launch_bounds__(kThreads) matvec_q6k(FastParams p) {
  const RowRef rr = locate_row(p);
  const int t = threadIdx.x & 7;
  const int64_t n_in = p.n_in, nb = n_in / 256, NB = nb * rr.n_out;
  float acc[B] = {}, acc2[B] = {};
#pragma unroll 2
  for (int64_t ib = threadIdx.x >> 3; ib < nb; ib += kThreads / 8) {
    q6k_block<B>(rr.w, NB, rr.row * nb + ib, t, ib * 256, n_in, p.xq, p.xds, acc);
    if (DUAL) q6k_block<B>(rr.w2, NB, rr.row * nb + ib, t, ib * 256, n_in, p.xq, p.xds, acc2);
  }
  block_epilogue<B>(acc, acc2, p.mode, rr);
}

// ---- Q8_0 (repacked): 2 lanes per 32-block, 16 quants each ----

template <int B>
__device__ __forceinline__ void q8_0_block(const uint8_t* w, int64_t NB, int64_t bi, int h, int64_t ib, int64_t n_in,
                                           const int8_t* xq, const float2* xds, float (&acc)[B]) {
  const int4 v = *reinterpret_cast<const int4*>(w + bi * 32 + 16 * h);
  const float d = f16_bits(*reinterpret_cast<const uint16_t*>(w + NB * 32 + bi * 2));
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const int4 a = *reinterpret_cast<const int4*>(xq + b * n_in + ib * 32 + 16 * h);
    const int si = dp4(v.w, a.w, dp4(v.z, a.z, dp4(v.y, a.y, dp4(v.x, a.x, 0))));
    acc[b] += d * xds[b * (n_in / 32) + ib].x * static_cast<float>(si);
  }
}

template <int B, bool DUAL>
__global__ void __launch_bounds__(kThreads) matvec_q8_0(FastParams p) {
  const RowRef rr = locate_row(p);
  const int64_t n_in = p.n_in, nb = n_in / 32, NB = nb * rr.n_out;
  const int h = threadIdx.x & 1;
  float acc[B] = {}, acc2[B] = {};
#pragma unroll 2
  for (int64_t ib = threadIdx.x >> 1; ib < nb; ib += kThreads / 2) {
    q8_0_block<B>(rr.w, NB, rr.row * nb + ib, h, ib, n_in, p.xq, p.xds, acc);
    if (DUAL) q8_0_block<B>(rr.w2, NB, rr.row * nb + ib, h, ib, n_in, p.xq, p.xds, acc2);
  }
  block_epilogue<B>(acc, acc2, p.mode, rr);
}

// ---- Q4_0 (repacked): one lane per 32-block ----

template <int B>
__device__ __forceinline__ void q4_0_block(const uint8_t* w, int64_t NB, int64_t bi, int64_t ib, int64_t n_in,
                                           const int8_t* xq, const float2* xds, float (&acc)[B]) {
  const uint4 v = *reinterpret_cast<const uint4*>(w + bi * 16);
  const float d = f16_bits(*reinterpret_cast<const uint16_t*>(w + NB * 16 + bi * 2));
  const uint32_t vv[4] = {v.x, v.y, v.z, v.w};
  int lo[4], hi[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    lo[i] = __vsub4(vv[i] & 0x0F0F0F0F, 0x08080808);
    hi[i] = __vsub4((vv[i] >> 4) & 0x0F0F0F0F, 0x08080808);
  }
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const int8_t* xa = xq + b * n_in + ib * 32;
    const int4 alo = *reinterpret_cast<const int4*>(xa);
    const int4 ahi = *reinterpret_cast<const int4*>(xa + 16);
    int si = dp4(lo[3], alo.w, dp4(lo[2], alo.z, dp4(lo[1], alo.y, dp4(lo[0], alo.x, 0))));
    si = dp4(hi[3], ahi.w, dp4(hi[2], ahi.z, dp4(hi[1], ahi.y, dp4(hi[0], ahi.x, si))));
    acc[b] += d * xds[b * (n_in / 32) + ib].x * static_cast<float>(si);
  }
}

template <int B, bool DUAL>
__global__ void __launch_bounds__(kThreads) matvec_q4_0(FastParams p) {
  const RowRef rr = locate_row(p);
  const int64_t n_in = p.n_in, nb = n_in / 32, NB = nb * rr.n_out;
  float acc[B] = {}, acc2[B] = {};
#pragma unroll 2
  for (int64_t ib = threadIdx.x; ib < nb; ib += kThreads) {
    q4_0_block<B>(rr.w, NB, rr.row * nb + ib, ib, n_in, p.xq, p.xds, acc);
    if (DUAL) q4_0_block<B>(rr.w2, NB, rr.row * nb + ib, ib, n_in, p.xq, p.xds, acc2);
  }
  block_epilogue<B>(acc, acc2, p.mode, rr);
}

using FastKernel = void (*)(FastParams);


#define PIPELLM_FAST_TABLE(NAME)                                                                             \
  FastKernel NAME##_kernel(int b, bool dual) {                                                               \
    static const FastKernel single[8] = {NAME<1, false>, NAME<2, false>, NAME<3, false>, NAME<4, false>,     \
                                         NAME<5, false>, NAME<6, false>, NAME<7, false>, NAME<8, false>};    \
    static const FastKernel both[8] = {NAME<1, true>, NAME<2, true>, NAME<3, true>, NAME<4, true>,           \
                                       NAME<5, true>, NAME<6, true>, NAME<7, true>, NAME<8, true>};          \
    return dual ? both[b - 1] : single[b - 1];                                                               \
  }
PIPELLM_FAST_TABLE(matvec_q4k)
PIPELLM_FAST_TABLE(matvec_q6k)
PIPELLM_FAST_TABLE(matvec_q8_0)
PIPELLM_FAST_TABLE(matvec_q4_0)
#undef PIPELLM_FAST_TABLE

std::string shape_of(const DeviceMatrix& m) {
  return std::string(tensor_type_name(m.type)) + " [" + std::to_string(m.n_in) + ", " + std::to_string(m.n_out) + "]";
}

}  // namespace

bool matvec_uses_q8(TensorType t) {
  return t == TensorType::Q4_K || t == TensorType::Q6_K || t == TensorType::Q8_0 || t == TensorType::Q4_0;
}

void matvec(const MatvecArgs& a, const Launch& s) {
  if (a.n_rows < 1 || a.n_rows > kMatvecMaxRows)
    throw Error("matvec: " + std::to_string(a.n_rows) + " activation rows (1.." + std::to_string(kMatvecMaxRows) +
                " supported)");
  const bool dual = a.mode == MatvecMode::Swiglu;
  if (dual && (a.w2.type != a.w.type || a.w2.n_in != a.w.n_in || a.w2.n_out != a.w.n_out))
    throw Error("matvec: swiglu matrices differ: " + shape_of(a.w) + " vs " + shape_of(a.w2));
  if (matvec_uses_q8(a.w.type)) {
    FastParams p{};
    p.w[0] = a.w.data;
    p.y[0] = a.y;
    p.y_stride[0] = a.y_stride;
    p.n_out[0] = a.w.n_out;
    p.w2 = a.w2.data;
    p.n_in = a.w.n_in;
    p.xq = a.xq;
    p.xds = a.xds;
    p.mode = a.mode;
    int64_t rows = a.w.n_out;
    for (int e = 0; e < a.n_extra; ++e) {
      const MatvecSegment& sg = a.extra[e];
      if (dual || sg.w.type != a.w.type || sg.w.n_in != a.w.n_in)
        throw Error("matvec: extra segment " + shape_of(sg.w) + " does not fit " + shape_of(a.w));
      p.w[e + 1] = sg.w.data;
      p.y[e + 1] = sg.y;
      p.y_stride[e + 1] = sg.y_stride;
      p.n_out[e + 1] = sg.w.n_out;
      rows += sg.w.n_out;
    }
    for (int e = a.n_extra + 1; e < 3; ++e) p.n_out[e] = 0;
    FastKernel k = nullptr;
    switch (a.w.type) {
      case TensorType::Q4_K: k = matvec_q4k_kernel(a.n_rows, dual); break;
      case TensorType::Q6_K: k = matvec_q6k_kernel(a.n_rows, dual); break;
      case TensorType::Q8_0: k = matvec_q8_0_kernel(a.n_rows, dual); break;
      default: k = matvec_q4_0_kernel(a.n_rows, dual); break;
    }
    launch_kernel(s, k, dim3(static_cast<unsigned>(rows)), dim3(kThreads), p);
    PIPELLM_CUDA_LAUNCH_CHECK("matvec");
    return;
  }
  if (a.n_extra > 0) throw Error("matvec: extra segments need a type with a fast kernel, not " + shape_of(a.w));
  const dim3 grid(static_cast<unsigned>((a.w.n_out + kWarps - 1) / kWarps));
  const int64_t nb = a.w.blocks();
  const bool ok = dispatch_type(a.w.type, [&](auto tag) {
    constexpr TensorType T = decltype(tag)::value;
    launch_kernel(s, matvec_generic<T>, grid, dim3(kThreads), a.w.data, a.w2.data, a.w.n_in, a.w.n_out, nb, a.n_rows, a.x,
                                                a.mode, a.y, a.y_stride);
  });
  if (!ok) throw Error("matvec: unsupported weight " + shape_of(a.w));
  PIPELLM_CUDA_LAUNCH_CHECK("matvec");
}

}  // namespace pipellm::cuda

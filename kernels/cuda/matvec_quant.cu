#include "kernels/cuda/matvec_quant.h"

#include <array>
#include <utility>

#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dequant_device.cuh"
#include "kernels/cuda/matvec_formats.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/gated_act.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kWarps = 4;  // generic kernel: rows per block (a warp each); fast kernels: warps per block
constexpr int kThreads = kWarps * 32;

// ---- generic: decode each weight to float, one warp per row ----

template <TensorType T>
__global__ void __launch_bounds__(kThreads) matvec_generic(const uint8_t* w, const uint8_t* w2, int64_t n_in,
                                                           int64_t n_out, int64_t nb, int nrows, const float* x,
                                                           MatvecMode mode, GatedAct act, float* y, int64_t ys) {
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
    const float v2 = mode == MatvecMode::Gated ? deq<T>(w2, nb, bi, j) : 0.0f;
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
    if (mode == MatvecMode::Gated) acc2[b] = warp_sum(acc2[b]);
  }
  if ((threadIdx.x & 31) != 0) return;
  for (int b = 0; b < nrows; ++b) {
    float* o = y + b * ys + row;
    if (mode == MatvecMode::Store) *o = acc[b];
    else if (mode == MatvecMode::Add) *o += acc[b];
    else *o = gated_by(act, acc[b], acc2[b]);
  }
}

// ---- float weights split over a block (MatvecArgs::float_split) ----
// One block per output row: its threads take 8 consecutive elements at a time (16-byte loads,
// several in flight), the warps meet in shared memory in a fixed order. matvec_generic gives a
// row one warp walking it one element per lane at a time: an MoE router (qwen3moe: F32, 128
// rows of 2048) took 57 us of each layer's decode on an H100 (ncu), 42% of the step.

// Elements i .. i + 7 of a float-type row (16-byte aligned: i a multiple of 8, the row too).
template <TensorType T>
__device__ __forceinline__ void load8_float(const uint8_t* row, int64_t i, float (&o)[8]) {
  if constexpr (T == TensorType::F32) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(row) + i / 4);
    const float4 b = __ldg(reinterpret_cast<const float4*>(row) + i / 4 + 1);
    o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
  } else {
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(row) + i / 8);
    const uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo = u[k] & 0xFFFFu, hi = u[k] >> 16;
      if constexpr (T == TensorType::F16) {
        o[2 * k] = __half2float(__ushort_as_half(static_cast<unsigned short>(lo)));
        o[2 * k + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(hi)));
      } else {  // BF16: the upper half of a float
        o[2 * k] = __uint_as_float(lo << 16);
        o[2 * k + 1] = __uint_as_float(hi << 16);
      }
    }
  }
}

template <TensorType T>
__global__ void __launch_bounds__(kThreads) matvec_float_split(const uint8_t* w, const uint8_t* w2, int64_t n_in,
                                                               int nrows, const float* x, MatvecMode mode, GatedAct act,
                                                               float* y, int64_t ys) {
  grid_dependency_wait();
  constexpr int64_t kEs = T == TensorType::F32 ? 4 : 2;
  const int64_t row = blockIdx.x;
  const uint8_t* wr = w + row * n_in * kEs;
  const uint8_t* wr2 = mode == MatvecMode::Gated ? w2 + row * n_in * kEs : nullptr;
  float acc[kMatvecMaxRows] = {}, acc2[kMatvecMaxRows] = {};
#pragma unroll 4
  for (int64_t i = 8 * static_cast<int64_t>(threadIdx.x); i < n_in; i += 8 * kThreads) {
    float v[8], v2[8] = {};
    load8_float<T>(wr, i, v);
    if (wr2 != nullptr) load8_float<T>(wr2, i, v2);
#pragma unroll
    for (int b = 0; b < kMatvecMaxRows; ++b) {
      if (b < nrows) {
        const float4 x0 = *reinterpret_cast<const float4*>(x + b * n_in + i);
        const float4 x1 = *reinterpret_cast<const float4*>(x + b * n_in + i + 4);
        const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          acc[b] = fmaf(v[k], xv[k], acc[b]);
          acc2[b] = fmaf(v2[k], xv[k], acc2[b]);
        }
      }
    }
  }
  __shared__ float red[2][kWarps][kMatvecMaxRows];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int b = 0; b < kMatvecMaxRows; ++b) {
    if (b < nrows) {
      const float s = warp_sum(acc[b]), s2 = warp_sum(acc2[b]);
      if (lane == 0) {
        red[0][warp][b] = s;
        red[1][warp][b] = s2;
      }
    }
  }
  __syncthreads();
  const int b = threadIdx.x;
  if (b >= nrows) return;
  float s = 0.0f, s2 = 0.0f;
#pragma unroll
  for (int k = 0; k < kWarps; ++k) {
    s += red[0][k][b];
    s2 += red[1][k][b];
  }
  float* o = y + b * ys + row;
  if (mode == MatvecMode::Store) *o = s;
  else if (mode == MatvecMode::Add) *o += s;
  else *o = gated_by(act, s, s2);
}

// ---- fast types: R output rows per block, dp4a on 8-bit activations ----
//
// Block g computes rows R*g .. R*g+R-1 of one segment (up to 3 matrices of the same type and n_in
// share a launch: q, k, v). Each thread owns a fixed part of the row (lane t of every kLanes-th
// item, see matvec_formats.cuh); it loads that part's activations once per item and multiplies
// them with the same part of all R rows (and of the up matrix for SwiGLU), so the activation
// reads are shared by R rows and R independent 16-byte weight loads are in flight per thread.
// The next item's weights are loaded before the current one is multiplied, and the first ones
// before the wait on the preceding grid (weights never depend on it): the weight stream starts
// while the previous kernel (the norm, quantisation) still runs.

struct FastParams {
  const uint8_t* w[3];
  const uint8_t* w2;  // Gated: the up matrix (one segment only)
  float* y[3];
  int64_t y_stride[3];
  int64_t n_out[3];
  int64_t groups[3];  // row groups (blocks) of each segment
  int64_t n_in;
  const int8_t* xq;
  const float2* xds;
  MatvecMode mode;
  GatedAct act;
};

// Rows per block for B activation rows: R*B <= 8 accumulators (per matrix).
__host__ __device__ constexpr int rows_per_block(int b, bool dual) {
  return b <= 2 ? (dual ? 2 : 4) : (b <= 4 ? (dual ? 1 : 2) : 1);
}

// FLAT (MatvecArgs::flat_items): the lane groups take the block's (row, item) pairs in one
// sequence, k = r nb + ib, instead of the same items of every row: a row of nb items that is no
// multiple of a pass (kIpp) no longer leaves lane groups idle (n_in 2048: nb 8 of 16; 5376: 21 of
// 32). Each pair's activations are then read for it alone (from L1) instead of once for R rows.
template <class F, int B, bool DUAL, bool FLAT>
__global__ void __launch_bounds__(kThreads) matvec_fast(FastParams p) {
  constexpr int R = rows_per_block(B, DUAL);
  constexpr int kIpp = kThreads / F::kLanes;  // items per pass of the block
  int64_t g = blockIdx.x;
  int s = 0;
  if (g >= p.groups[0]) {
    g -= p.groups[0];
    s = 1;
    if (g >= p.groups[1]) {
      g -= p.groups[1];
      s = 2;
    }
  }
  const int64_t n_out = p.n_out[s], row0 = g * R, n_in = p.n_in;
  const int64_t nb = n_in / F::kItem;
  const mv::WeightRef m{p.w[s], nb, nb * n_out};
  const mv::WeightRef m2{p.w2, nb, nb * n_out};
  const int t = static_cast<int>(threadIdx.x % F::kLanes);
  float acc[R][B] = {}, acc2[R][B] = {};
  if constexpr (FLAT) {
    // Pair k = r nb + ib as a cursor (r, ib), advanced by kIpp (no divisions in the loop).
    const int nb32 = static_cast<int>(nb), n_items = R * nb32;
    int k = static_cast<int>(threadIdx.x / F::kLanes), r = k / nb32, ib = k % nb32;
    typename F::Raw w{}, w2{};
    const auto load = [&](int rr, int ii) {
      const int64_t row = min(row0 + rr, n_out - 1);  // tail rows: computed, not stored
      w = F::load(m, row, ii, t);
      if (DUAL) w2 = F::load(m2, row, ii, t);
    };
    if (k < n_items) load(r, ib);
    grid_dependency_wait();
    for (; k < n_items; k += kIpp) {
      const typename F::Raw cw = w, cw2 = w2;
      const int cr = r, cib = ib;
      for (ib += kIpp; ib >= nb32; ib -= nb32) ++r;
      if (k + kIpp < n_items) load(r, ib);
      typename F::Act a[B];
#pragma unroll
      for (int b = 0; b < B; ++b) a[b] = F::act(p.xq + b * n_in, p.xds + b * (n_in / 32), cib, t);
      const typename F::Dec d = F::decode(cw, t);
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const float v = F::dot(d, a[b], t);
#pragma unroll
        for (int rr = 0; rr < R; ++rr) acc[rr][b] += rr == cr ? v : 0.0f;  // registers, not an indexed array
      }
      if (DUAL) {
        const typename F::Dec d2 = F::decode(cw2, t);
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const float v = F::dot(d2, a[b], t);
#pragma unroll
          for (int rr = 0; rr < R; ++rr) acc2[rr][b] += rr == cr ? v : 0.0f;
        }
      }
    }
  } else {
    int64_t row[R];
#pragma unroll
    for (int r = 0; r < R; ++r) row[r] = row0 + r < n_out ? row0 + r : n_out - 1;  // tail rows: computed, not stored
    int64_t ib = threadIdx.x / F::kLanes;

    typename F::Raw w[R], w2[R];
    if (ib < nb) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        w[r] = F::load(m, row[r], ib, t);
        if (DUAL) w2[r] = F::load(m2, row[r], ib, t);
      }
    }
    grid_dependency_wait();

    for (; ib < nb; ib += kIpp) {
      typename F::Raw cw[R], cw2[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        cw[r] = w[r];
        if (DUAL) cw2[r] = w2[r];
      }
      if (ib + kIpp < nb) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          w[r] = F::load(m, row[r], ib + kIpp, t);
          if (DUAL) w2[r] = F::load(m2, row[r], ib + kIpp, t);
        }
      }
      typename F::Act a[B];
#pragma unroll
      for (int b = 0; b < B; ++b) a[b] = F::act(p.xq + b * n_in, p.xds + b * (n_in / 32), ib, t);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const typename F::Dec d = F::decode(cw[r], t);
#pragma unroll
        for (int b = 0; b < B; ++b) acc[r][b] += F::dot(d, a[b], t);
        if (DUAL) {
          const typename F::Dec d2 = F::decode(cw2[r], t);
#pragma unroll
          for (int b = 0; b < B; ++b) acc2[r][b] += F::dot(d2, a[b], t);
        }
      }
    }
  }

  __shared__ float red[kWarps][R * B], red2[kWarps][R * B];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      const float v = warp_sum(acc[r][b]);
      const float v2 = DUAL ? warp_sum(acc2[r][b]) : 0.0f;
      if (lane == 0) {
        red[warp][r * B + b] = v;
        red2[warp][r * B + b] = v2;
      }
    }
  }
  __syncthreads();
  const int i = threadIdx.x;
  if (i >= R * B) return;
  const int r = i / B, b = i % B;
  if (row0 + r >= n_out) return;
  float v = 0.0f, v2 = 0.0f;
#pragma unroll
  for (int k = 0; k < kWarps; ++k) {
    v += red[k][i];
    v2 += red2[k][i];
  }
  float* o = p.y[s] + b * p.y_stride[s] + row0 + r;
  if (p.mode == MatvecMode::Store) *o = v;
  else if (p.mode == MatvecMode::Add) *o += v;
  else *o = gated_by(p.act, v, v2);
}

using FastKernel = void (*)(FastParams);

template <class F, bool DUAL, bool FLAT, int... B>
constexpr std::array<FastKernel, sizeof...(B)> fast_table(std::integer_sequence<int, B...>) {
  return {matvec_fast<F, B + 1, DUAL, FLAT>...};
}

// Several rows a block (FLAT's gain) only up to 4 activation rows (rows_per_block).
constexpr int kFlatMaxRows = 4;

// The kernel for b activation rows; flat: the block's rows share its passes (FLAT) where it has
// several and a row of nb items leaves lane groups idle.
template <class F>
FastKernel fast_kernel(int b, bool dual, bool flat, int64_t nb) {
  static constexpr auto single = fast_table<F, false, false>(std::make_integer_sequence<int, kMatvecMaxRows>{});
  static constexpr auto both = fast_table<F, true, false>(std::make_integer_sequence<int, kMatvecMaxRows>{});
  static constexpr auto single_flat = fast_table<F, false, true>(std::make_integer_sequence<int, kFlatMaxRows>{});
  static constexpr auto both_flat = fast_table<F, true, true>(std::make_integer_sequence<int, kFlatMaxRows>{});
  if (flat && b <= kFlatMaxRows && rows_per_block(b, dual) > 1 && nb % (kThreads / F::kLanes) != 0) {
    return dual ? both_flat[b - 1] : single_flat[b - 1];
  }
  return dual ? both[b - 1] : single[b - 1];
}

std::string shape_of(const DeviceMatrix& m) {
  return std::string(tensor_type_name(m.type)) + " [" + std::to_string(m.n_in) + ", " + std::to_string(m.n_out) + "]";
}

}  // namespace

bool matvec_uses_q8(TensorType t) {
  return mv::with_format(t, [](auto) {});
}

void matvec(const MatvecArgs& a, const Launch& s) {
  if (a.n_rows < 1 || a.n_rows > kMatvecMaxRows)
    throw Error("matvec: " + std::to_string(a.n_rows) + " activation rows (1.." + std::to_string(kMatvecMaxRows) +
                " supported)");
  const bool dual = a.mode == MatvecMode::Gated;
  if (dual) with_gated_act(a.act, "matvec", [](auto) {});  // an unknown activation fails here, by name
  if (dual && (a.w2.type != a.w.type || a.w2.n_in != a.w.n_in || a.w2.n_out != a.w.n_out))
    throw Error("matvec: gate and up matrices differ: " + shape_of(a.w) + " vs " + shape_of(a.w2));
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
    p.act = a.act;
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
    const int R = rows_per_block(a.n_rows, dual);
    int64_t blocks = 0;
    for (int e = 0; e < 3; ++e) {
      p.groups[e] = (p.n_out[e] + R - 1) / R;
      blocks += p.groups[e];
    }
    FastKernel k = nullptr;
    mv::with_format(a.w.type, [&](auto fmt) {
      using F = decltype(fmt);
      k = fast_kernel<F>(a.n_rows, dual, a.flat_items, a.w.n_in / F::kItem);
    });
    if (blocks > 0x7fffffff) throw Error("matvec: " + std::to_string(rows) + " rows are too many for one launch");
    launch_kernel(s, k, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), p);
    PIPELLM_CUDA_LAUNCH_CHECK("matvec");
    return;
  }
  if (a.n_extra > 0) throw Error("matvec: extra segments need a type with a fast kernel, not " + shape_of(a.w));
  const bool float_type = a.w.type == TensorType::F32 || a.w.type == TensorType::F16 || a.w.type == TensorType::BF16;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (a.float_split && float_type && a.w.n_in % 8 == 0 && aligned(a.w.data) && aligned(a.x) &&
      (!dual || aligned(a.w2.data))) {
    const auto launch = [&](auto k) {
      launch_kernel(s, k, dim3(static_cast<unsigned>(a.w.n_out)), dim3(kThreads), a.w.data, a.w2.data, a.w.n_in,
                    a.n_rows, a.x, a.mode, a.act, a.y, a.y_stride);
    };
    if (a.w.type == TensorType::F32) launch(matvec_float_split<TensorType::F32>);
    else if (a.w.type == TensorType::F16) launch(matvec_float_split<TensorType::F16>);
    else launch(matvec_float_split<TensorType::BF16>);
    PIPELLM_CUDA_LAUNCH_CHECK("matvec (float, split)");
    return;
  }
  const dim3 grid(static_cast<unsigned>((a.w.n_out + kWarps - 1) / kWarps));
  const int64_t nb = a.w.blocks();
  const bool ok = dispatch_type(a.w.type, [&](auto tag) {
    constexpr TensorType T = decltype(tag)::value;
    launch_kernel(s, matvec_generic<T>, grid, dim3(kThreads), a.w.data, a.w2.data, a.w.n_in, a.w.n_out, nb, a.n_rows, a.x,
                                                a.mode, a.act, a.y, a.y_stride);
  });
  if (!ok) throw Error("matvec: unsupported weight " + shape_of(a.w));
  PIPELLM_CUDA_LAUNCH_CHECK("matvec");
}

}  // namespace pipellm::cuda

// moe_route, moe_matvec, moe_combine. moe_gated_act lives in layer_ops.cu, beside gated_act:
// both forms share one activation kernel.
#include "kernels/cuda/moe.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dequant_device.cuh"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/gated_act.cuh"
#include "kernels/cuda/matvec_formats.cuh"
#include "kernels/cuda/matvec_quant.h"

namespace pipellm::cuda {
namespace {

// ---- routing: one warp per token ----

constexpr int kRouteWarps = 4;
constexpr int kRoutePerLane = 16;
constexpr int kRouteMaxExperts = 32 * kRoutePerLane;
constexpr int kRouteMaxK = 32;  // lane j keeps the j-th choice

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// (v, id) beats (bv, bi): larger logit, ties to the lower id; INT_MAX marks "no candidate". A
// strict total order, so the butterfly leaves every lane with the same winner.
__device__ __forceinline__ bool route_better(float v, int id, float bv, int bi) {
  return id != INT_MAX && (bi == INT_MAX || v > bv || (v == bv && id < bi));
}

// k rounds of a warp-wide argmax over the not yet chosen experts (lane l holds experts l + 32 s),
// then the weights in double from the chosen logits exactly as kernels/cpu/moe_route.cpp.
template <MoeRouting R>
__global__ void __launch_bounds__(kRouteWarps * 32) moe_route_kernel(const float* logits, const float* bias,
                                                                     int n_tokens, int n_expert, int k, int32_t* ids,
                                                                     float* weights) {
  grid_dependency_wait();
  const int lane = threadIdx.x & 31;
  const int t = blockIdx.x * kRouteWarps + (threadIdx.x >> 5);
  if (t >= n_tokens) return;
  const float* lr = logits + static_cast<int64_t>(t) * n_expert;
  float v[kRoutePerLane];
  uint32_t taken = 0;  // bit s: expert lane + 32 s is chosen or does not exist
#pragma unroll
  for (int s = 0; s < kRoutePerLane; ++s) {
    const int e = lane + 32 * s;
    v[s] = -INFINITY;
    if (e < n_expert) {
      const float x = lr[e] + (bias ? bias[e] : 0.0f);
      // NaN (garbage logits of a padding token) would break the total order; as -inf the ids
      // stay valid experts.
      v[s] = isnan(x) ? -INFINITY : x;
    } else {
      taken |= 1u << s;
    }
  }
  float my_v = 0.0f;
  int my_id = 0;
  for (int j = 0; j < k; ++j) {
    float bv = -INFINITY;
    int bi = INT_MAX;
#pragma unroll
    for (int s = 0; s < kRoutePerLane; ++s) {
      if (!((taken >> s) & 1u) && route_better(v[s], lane + 32 * s, bv, bi)) {
        bv = v[s];
        bi = lane + 32 * s;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (route_better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == (bi & 31)) taken |= 1u << (bi >> 5);
    if (lane == j) {
      my_v = bv;
      my_id = bi;
    }
  }
  const double top = static_cast<double>(__shfl_sync(0xffffffffu, my_v, 0));
  const double ex = lane < k ? exp(static_cast<double>(my_v) - top) : 0.0;
  const double chosen = warp_sum_d(ex);
  double denom = chosen;
  if constexpr (R == MoeRouting::SoftmaxTopK) {
    double all = 0.0;
#pragma unroll
    for (int s = 0; s < kRoutePerLane; ++s)
      if (lane + 32 * s < n_expert) all += exp(static_cast<double>(v[s]) - top);
    all = warp_sum_d(all);
    denom = fmax(chosen / all, 6.103515625e-5) * all;  // llama.cpp's clamp of the renormalising sum
  }
  if (lane < k) {
    ids[static_cast<int64_t>(t) * k + lane] = my_id;
    weights[static_cast<int64_t>(t) * k + lane] = static_cast<float>(ex / denom);
  }
}

// ---- expert mat-vec: one warp per (output row, pair), weights decoded to float ----

constexpr int kMvWarps = 4;
constexpr int kMvThreads = kMvWarps * 32;
constexpr int kMaxGridY = 65535;

struct MvParams {
  const uint8_t* w;
  size_t expert_bytes;
  int64_t n_in, n_out, nb;
  const int32_t* ids;
  int n_pairs;
  const float* x;
  int x_group;
  const float* bias;
  float* y;
};

// BY8: each lane takes 8 consecutive elements at a time (n_in % 8 == 0, x 16-byte aligned);
// else one element at a time.
template <TensorType T, bool BY8>
__global__ void __launch_bounds__(kMvThreads) moe_matvec_kernel(MvParams a) {
  grid_dependency_wait();  // ids come from the router: nothing can be loaded before it
  constexpr int bs = TypeTraits<T>::block_size;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMvWarps + (threadIdx.x >> 5);
  if (row >= a.n_out) return;
  const int64_t bpr = a.n_in / bs;
  for (int p = blockIdx.y; p < a.n_pairs; p += gridDim.y) {
    const int64_t e = a.ids[p];
    const uint8_t* w = a.w + static_cast<size_t>(e) * a.expert_bytes;
    const float* x = a.x + static_cast<int64_t>(p / a.x_group) * a.n_in;
    float acc = 0.0f;
    if constexpr (BY8) {
#pragma unroll 2
      for (int64_t c = 8 * lane; c < a.n_in; c += 8 * 32) {
        float wv[8];
        deq8<T>(w, a.nb, row * bpr + c / bs, static_cast<int>(c % bs), wv);
        const float4 x0 = *reinterpret_cast<const float4*>(x + c);
        const float4 x1 = *reinterpret_cast<const float4*>(x + c + 4);
        acc += wv[0] * x0.x + wv[1] * x0.y + wv[2] * x0.z + wv[3] * x0.w;
        acc += wv[4] * x1.x + wv[5] * x1.y + wv[6] * x1.z + wv[7] * x1.w;
      }
    } else {
      for (int64_t c = lane; c < a.n_in; c += 32)
        acc += deq<T>(w, a.nb, row * bpr + c / bs, static_cast<int>(c % bs)) * x[c];
    }
    acc = warp_sum(acc);
    if (lane == 0) a.y[static_cast<int64_t>(p) * a.n_out + row] = acc + (a.bias ? a.bias[e * a.n_out + row] : 0.0f);
  }
}

// ---- expert mat-vec on 8-bit activations: the dense mat-vec's formats (matvec_formats.cuh) ----
// Each warp computes kQ8WarpRows rows of one pair: its lanes take the items of a row in turn
// (F::kLanes lanes share an item, lane t of it), load the activations of an item once for all
// the warp's rows, and the warp's sum is the row's value. Warps rather than blocks per row keep
// the narrow rows of the down products (768 elements: 3 K-quant items) from idling most threads.

constexpr int kQ8WarpRows = 2;
constexpr int kQ8Rows = kMvWarps * kQ8WarpRows;  // rows per block

struct MvQ8Params {
  const uint8_t* w;
  size_t expert_bytes;
  int64_t n_in, n_out;
  const int32_t* ids;
  int n_pairs;
  const int8_t* xq;
  const float2* xds;
  int x_group;
  const float* bias;
  float* y;
};

// A warp's kQ8WarpRows rows of one pair in each of M matrices of one shape (gate and up: their
// loads in flight together): the lanes' partial sums, before warp_sum.
template <class F, int M>
__device__ __forceinline__ void q8_rows_dot(const mv::WeightRef (&m)[M], const int64_t (&row)[kQ8WarpRows],
                                            const int8_t* xq, const float2* xds, int64_t nb, int lane,
                                            float (&acc)[M][kQ8WarpRows]) {
  constexpr int kIpw = 32 / F::kLanes;
  const int t = lane % F::kLanes;
  for (int64_t ib = lane / F::kLanes; ib < nb; ib += kIpw) {
    typename F::Raw w[M][kQ8WarpRows];
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int r = 0; r < kQ8WarpRows; ++r) w[i][r] = F::load(m[i], row[r], ib, t);  // loads in flight together
    const typename F::Act act = F::act(xq, xds, ib, t);
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int r = 0; r < kQ8WarpRows; ++r) acc[i][r] += F::dot(F::decode(w[i][r], t), act, t);
  }
}

template <class F>
__global__ void __launch_bounds__(kMvThreads) moe_matvec_q8_kernel(MvQ8Params a) {
  grid_dependency_wait();  // ids and activations come from the preceding kernels
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t nb = a.n_in / F::kItem;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kMvWarps + warp) * kQ8WarpRows;
  if (row0 >= a.n_out) return;  // the whole warp: nothing below synchronises the block
  int64_t row[kQ8WarpRows];
#pragma unroll
  for (int r = 0; r < kQ8WarpRows; ++r) row[r] = row0 + r < a.n_out ? row0 + r : a.n_out - 1;  // tail: not stored
  for (int p = blockIdx.y; p < a.n_pairs; p += gridDim.y) {
    const int64_t e = a.ids[p];
    const mv::WeightRef m[1] = {{a.w + static_cast<size_t>(e) * a.expert_bytes, nb, nb * a.n_out}};
    const int64_t xr = p / a.x_group;
    float acc[1][kQ8WarpRows] = {};
    q8_rows_dot<F, 1>(m, row, a.xq + xr * a.n_in, a.xds + xr * (a.n_in / 32), nb, lane, acc);
#pragma unroll
    for (int r = 0; r < kQ8WarpRows; ++r) {
      const float v = warp_sum(acc[0][r]);
      if (lane == 0 && row0 + r < a.n_out) {
        a.y[static_cast<int64_t>(p) * a.n_out + row0 + r] = v + (a.bias ? a.bias[e * a.n_out + row0 + r] : 0.0f);
      }
    }
  }
}

// The 8-bit format of a type for rows of n_in, as a tag for `fn`; false where there is none.
template <class Fn>
bool with_q8_format(TensorType t, int64_t n_in, Fn&& fn) {
  bool found = false;
  mv::with_format(t, [&](auto fmt) {
    using F = decltype(fmt);
    if (n_in % F::kItem == 0) {
      found = true;
      fn(fmt);
    }
  });
  return found;
}

// The 8-bit kernel of a type, or null where the type has none (or the rows are not whole items).
using MvQ8Kernel = void (*)(MvQ8Params);
MvQ8Kernel q8_kernel(TensorType t, int64_t n_in) {
  MvQ8Kernel k = nullptr;  // null: decoded to float by moe_matvec_kernel
  with_q8_format(t, n_in, [&](auto fmt) { k = moe_matvec_q8_kernel<decltype(fmt)>; });
  return k;
}

// ---- fused decode launches on 8-bit activations (moe.h: moe_gated_matvec, moe_matvec_combine) ----
// Each warp computes the same sums as moe_matvec_q8_kernel's warps (same items, same order), so
// the fused results equal the separate launches' bit for bit.

// Gate and up, kGatedRows rows (one 8-bit block of the output) of one pair per block: each warp
// its kQ8WarpRows rows of both stacks, then one warp activates and quantizes the block's rows.
constexpr int kGatedWarps = 16;
constexpr int kGatedRows = kGatedWarps * kQ8WarpRows;
static_assert(kGatedRows == 32, "a block's rows are one 8-bit activation block");

struct MvGatedParams {
  MvQ8Params g;  // y: the activated rows
  const uint8_t* w2;
  size_t expert_bytes2;
  const float* bias2;
  int8_t* yq;
  float2* yds;
};

template <class F, GatedAct A>
__global__ void __launch_bounds__(kGatedWarps * 32) moe_gated_q8_kernel(MvGatedParams a) {
  grid_dependency_wait();
  __shared__ float act[kGatedRows];
  const MvQ8Params& g = a.g;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t nb = g.n_in / F::kItem;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kGatedRows + warp * kQ8WarpRows;  // n_out % 32 == 0
  int64_t row[kQ8WarpRows];
#pragma unroll
  for (int r = 0; r < kQ8WarpRows; ++r) row[r] = row0 + r;
  for (int p = blockIdx.y; p < g.n_pairs; p += gridDim.y) {
    const int64_t e = g.ids[p];
    const mv::WeightRef m[2] = {{g.w + static_cast<size_t>(e) * g.expert_bytes, nb, nb * g.n_out},
                                {a.w2 + static_cast<size_t>(e) * a.expert_bytes2, nb, nb * g.n_out}};
    const int64_t xr = p / g.x_group;
    float acc[2][kQ8WarpRows] = {};
    q8_rows_dot<F, 2>(m, row, g.xq + xr * g.n_in, g.xds + xr * (g.n_in / 32), nb, lane, acc);
#pragma unroll
    for (int r = 0; r < kQ8WarpRows; ++r) {
      const float gv = warp_sum(acc[0][r]) + (g.bias ? g.bias[e * g.n_out + row[r]] : 0.0f);
      const float uv = warp_sum(acc[1][r]) + (a.bias2 ? a.bias2[e * g.n_out + row[r]] : 0.0f);
      if (lane == 0) act[warp * kQ8WarpRows + r] = gated<A>(gv, uv);
    }
    __syncthreads();
    if (warp == 0) {  // the block's 32 values as rmsnorm_convert quantizes them
      const float v = act[lane];
      const int64_t i = static_cast<int64_t>(p) * g.n_out + static_cast<int64_t>(blockIdx.x) * kGatedRows + lane;
      g.y[i] = v;
      float2 ds;
      a.yq[i] = quantize_act_block(v, ds);
      if (lane == 0) a.yds[i / 32] = ds;
    }
    __syncthreads();  // act is refilled for the next pair
  }
}

// Down and combine: one warp per pair of a token (k warps), kQ8WarpRows rows per block; the
// pairs' values meet in shared memory and are summed in j order as moe_combine sums them.
constexpr int kCombineMaxK = 16;

struct MvCombineParams {
  MvQ8Params d;
  const float* weights;
  int k, n_tokens;
  float* out;
  bool add;
};

template <class F>
__global__ void __launch_bounds__(kCombineMaxK * 32) moe_down_combine_q8_kernel(MvCombineParams a) {
  grid_dependency_wait();
  __shared__ float yv[kCombineMaxK][kQ8WarpRows];
  const MvQ8Params& d = a.d;
  const int lane = threadIdx.x & 31, j = threadIdx.x >> 5;  // blockDim.x = 32 k
  const int64_t nb = d.n_in / F::kItem;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kQ8WarpRows;
  int64_t row[kQ8WarpRows];
#pragma unroll
  for (int r = 0; r < kQ8WarpRows; ++r) row[r] = row0 + r < d.n_out ? row0 + r : d.n_out - 1;  // tail: not stored
  for (int tk = blockIdx.y; tk < a.n_tokens; tk += gridDim.y) {
    const int p = tk * a.k + j;
    const int64_t e = d.ids[p];
    const mv::WeightRef m[1] = {{d.w + static_cast<size_t>(e) * d.expert_bytes, nb, nb * d.n_out}};
    float acc[1][kQ8WarpRows] = {};
    q8_rows_dot<F, 1>(m, row, d.xq + static_cast<int64_t>(p) * d.n_in, d.xds + static_cast<int64_t>(p) * (d.n_in / 32),
                      nb, lane, acc);
#pragma unroll
    for (int r = 0; r < kQ8WarpRows; ++r) {
      const float v = warp_sum(acc[0][r]);
      if (lane == 0) yv[j][r] = v + (d.bias ? d.bias[e * d.n_out + row[r]] : 0.0f);
    }
    __syncthreads();
    if (threadIdx.x < kQ8WarpRows && row0 + threadIdx.x < d.n_out) {
      const int r = threadIdx.x;
      float s = 0.0f;
      for (int q = 0; q < a.k; ++q) s += a.weights[tk * a.k + q] * yv[q][r];
      float* o = a.out + static_cast<int64_t>(tk) * d.n_out + row0 + r;
      *o = a.add ? *o + s : s;
    }
    __syncthreads();  // yv is refilled for the next token
  }
}

// ---- combine: out[t][i] (+)= sum_j w[t][j] y[t][j][i] ----

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) moe_combine_kernel(const float* y, const float* weights, int k, int64_t n,
                                                               int64_t total, float* out, bool add) {
  grid_dependency_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / n, c = i - t * n;
    float s = 0.0f;
    for (int j = 0; j < k; ++j) s += weights[t * k + j] * y[(t * k + j) * n + c];
    out[i] = add ? out[i] + s : s;
  }
}

std::string shape_of(const DeviceMatrix& m) {
  return std::string(tensor_type_name(m.type)) + " [" + std::to_string(m.n_in) + ", " + std::to_string(m.n_out) + "]";
}

}  // namespace

void moe_route(MoeRouting r, const float* logits, const float* bias, int n_tokens, int n_expert, int k, int32_t* ids,
               float* weights, const Launch& s) {
  if (n_tokens == 0) return;
  if (n_expert < 1 || n_expert > kRouteMaxExperts || k < 1 || k > n_expert || k > kRouteMaxK)
    throw Error("moe_route: " + std::to_string(k) + " of " + std::to_string(n_expert) + " experts unsupported (up to " +
                std::to_string(kRouteMaxExperts) + " experts, k <= " + std::to_string(kRouteMaxK) + ")");
  const dim3 grid(static_cast<unsigned>((n_tokens + kRouteWarps - 1) / kRouteWarps)), block(kRouteWarps * 32);
  switch (r) {
    case MoeRouting::SoftmaxTopK:
      launch_kernel(s, moe_route_kernel<MoeRouting::SoftmaxTopK>, grid, block, logits, bias, n_tokens, n_expert, k,
                    ids, weights);
      break;
    case MoeRouting::TopKSoftmax:
      launch_kernel(s, moe_route_kernel<MoeRouting::TopKSoftmax>, grid, block, logits, bias, n_tokens, n_expert, k,
                    ids, weights);
      break;
    default:
      throw Error("moe_route: unknown routing " + std::to_string(static_cast<int>(r)));
  }
  PIPELLM_CUDA_LAUNCH_CHECK("moe_route");
}

namespace {

// Whether the 8-bit kernels can take a stack: activation blocks given, 16-byte loads from each
// expert's base (as from a dense matrix's), a type with a format.
bool q8_ready(const DeviceMatrix& w, size_t expert_bytes, const int8_t* xq, const float2* xds) {
  return xq != nullptr && xds != nullptr && reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && expert_bytes % 16 == 0 &&
         reinterpret_cast<uintptr_t>(xq) % 16 == 0 && matvec_uses_q8(w.type);
}

// moe_matvec's checks of a stack and its pairs, shared by the fused launches.
void check_stack(const char* what, const DeviceMatrix& w, size_t expert_bytes, int n_pairs, int x_group) {
  const int bs = tensor_type_info(w.type).block_size;
  if (w.n_in % bs != 0)
    throw Error(std::string(what) + ": " + shape_of(w) + ": rows are not whole blocks of " + std::to_string(bs));
  if (x_group < 1 || n_pairs % x_group != 0)
    throw Error(std::string(what) + ": " + std::to_string(n_pairs) + " pairs in groups of " + std::to_string(x_group));
  if (expert_bytes < w.bytes())
    throw Error(std::string(what) + ": experts " + std::to_string(expert_bytes) + " bytes apart, but " + shape_of(w) +
                " takes " + std::to_string(w.bytes()));
}

}  // namespace

void moe_matvec(const MoeMatvecArgs& a, const Launch& s) {
  if (a.n_pairs == 0 || a.w.n_out == 0) return;
  check_stack("moe_matvec", a.w, a.expert_bytes, a.n_pairs, a.x_group);
  if (q8_ready(a.w, a.expert_bytes, a.xq, a.xds)) {
    if (const MvQ8Kernel k = q8_kernel(a.w.type, a.w.n_in)) {
      const MvQ8Params q{a.w.data, a.expert_bytes, a.w.n_in, a.w.n_out, a.ids, a.n_pairs, a.xq, a.xds, a.x_group,
                         a.bias, a.y};
      const dim3 grid(static_cast<unsigned>((a.w.n_out + kQ8Rows - 1) / kQ8Rows),
                      static_cast<unsigned>(std::min(a.n_pairs, kMaxGridY)));
      launch_kernel(s, k, grid, dim3(kMvThreads), q);
      PIPELLM_CUDA_LAUNCH_CHECK("moe_matvec (8-bit activations)");
      return;
    }
  }
  MvParams p{a.w.data, a.expert_bytes, a.w.n_in, a.w.n_out, a.w.blocks(), a.ids, a.n_pairs, a.x, a.x_group, a.bias,
             a.y};
  // The 8-wide path reads x as float4 and the weights through deq8 (8-byte words from every
  // expert's base). Other shapes take the one-element path (correct, slower).
  const bool by8 = a.w.n_in % 8 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.w.data) % 8 == 0 && a.expert_bytes % 8 == 0;
  const dim3 grid(static_cast<unsigned>((a.w.n_out + kMvWarps - 1) / kMvWarps),
                  static_cast<unsigned>(std::min(a.n_pairs, kMaxGridY)));
  const bool ok = dispatch_type(a.w.type, [&](auto tag) {
    constexpr TensorType T = decltype(tag)::value;
    if (by8) launch_kernel(s, moe_matvec_kernel<T, true>, grid, dim3(kMvThreads), p);
    else launch_kernel(s, moe_matvec_kernel<T, false>, grid, dim3(kMvThreads), p);
  });
  if (!ok) throw Error("moe_matvec: unsupported weight type " + shape_of(a.w));
  PIPELLM_CUDA_LAUNCH_CHECK("moe_matvec");
}

bool moe_gated_matvec_supports(const MoeGatedArgs& a) {
  const MoeMatvecArgs& g = a.gate;
  return q8_ready(g.w, g.expert_bytes, g.xq, g.xds) && q8_ready(a.up, a.up_expert_bytes, g.xq, g.xds) &&
         a.up.type == g.w.type && a.up.n_in == g.w.n_in && a.up.n_out == g.w.n_out && g.w.n_out % kGatedRows == 0 &&
         with_q8_format(g.w.type, g.w.n_in, [](auto) {}) && g.y != nullptr && a.yq != nullptr && a.yds != nullptr;
}

void moe_gated_matvec(const MoeGatedArgs& a, const Launch& s) {
  const MoeMatvecArgs& g = a.gate;
  if (g.n_pairs == 0) return;
  if (!moe_gated_matvec_supports(a))
    throw Error("moe_gated_matvec: gate " + shape_of(g.w) + ", up " + shape_of(a.up) +
                " (needs one type with an 8-bit format, rows a multiple of 32, 16-byte aligned experts and 8-bit "
                "activations in and out)");
  check_stack("moe_gated_matvec (gate)", g.w, g.expert_bytes, g.n_pairs, g.x_group);
  check_stack("moe_gated_matvec (up)", a.up, a.up_expert_bytes, g.n_pairs, g.x_group);
  const MvGatedParams q{{g.w.data, g.expert_bytes, g.w.n_in, g.w.n_out, g.ids, g.n_pairs, g.xq, g.xds, g.x_group, g.bias,
                         g.y},
                        a.up.data, a.up_expert_bytes, a.up_bias, a.yq, a.yds};
  const dim3 grid(static_cast<unsigned>(g.w.n_out / kGatedRows), static_cast<unsigned>(std::min(g.n_pairs, kMaxGridY)));
  with_q8_format(g.w.type, g.w.n_in, [&](auto fmt) {
    with_gated_act(a.act, "moe_gated_matvec", [&](auto act) {
      launch_kernel(s, moe_gated_q8_kernel<decltype(fmt), decltype(act)::value>, grid, dim3(kGatedWarps * 32), q);
    });
  });
  PIPELLM_CUDA_LAUNCH_CHECK("moe_gated_matvec");
}

bool moe_matvec_combine_supports(const MoeCombineArgs& a) {
  const MoeMatvecArgs& d = a.down;
  return q8_ready(d.w, d.expert_bytes, d.xq, d.xds) && with_q8_format(d.w.type, d.w.n_in, [](auto) {}) &&
         d.x_group == 1 && a.k >= 1 && a.k <= kCombineMaxK && d.n_pairs % a.k == 0 && a.weights != nullptr;
}

void moe_matvec_combine(const MoeCombineArgs& a, const Launch& s) {
  const MoeMatvecArgs& d = a.down;
  if (d.n_pairs == 0 || d.w.n_out == 0) return;
  if (!moe_matvec_combine_supports(a))
    throw Error("moe_matvec_combine: " + shape_of(d.w) + ", " + std::to_string(a.k) +
                " pairs per token (needs a type with an 8-bit format, 16-byte aligned experts, 8-bit activations, 1.." +
                std::to_string(kCombineMaxK) + " pairs per token)");
  check_stack("moe_matvec_combine", d.w, d.expert_bytes, d.n_pairs, 1);
  if (a.out == nullptr) throw Error("moe_matvec_combine: no output rows");
  const int n_tokens = d.n_pairs / a.k;
  const MvCombineParams q{{d.w.data, d.expert_bytes, d.w.n_in, d.w.n_out, d.ids, d.n_pairs, d.xq,
                           d.xds, 1, d.bias, nullptr},
                          a.weights, a.k, n_tokens, a.out, a.add};
  const dim3 grid(static_cast<unsigned>((d.w.n_out + kQ8WarpRows - 1) / kQ8WarpRows),
                  static_cast<unsigned>(std::min(n_tokens, kMaxGridY)));
  with_q8_format(d.w.type, d.w.n_in,
                 [&](auto fmt) { launch_kernel(s, moe_down_combine_q8_kernel<decltype(fmt)>, grid, dim3(32 * a.k), q); });
  PIPELLM_CUDA_LAUNCH_CHECK("moe_matvec_combine");
}

void moe_combine(const float* y, const float* weights, int n_tokens, int k, int64_t n, float* out, bool add,
                 const Launch& s) {
  const int64_t total = static_cast<int64_t>(n_tokens) * n;
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 132 * 16));
  launch_kernel(s, moe_combine_kernel, dim3(blocks), dim3(kThreads), y, weights, k, n, total, out, add);
  PIPELLM_CUDA_LAUNCH_CHECK("moe_combine");
}

}  // namespace pipellm::cuda

#include <algorithm>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/delta_net.h"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

// Both kernels find their work on the device: the slot of a row is only known there. Block x of
// the grid takes the candidate rows x, x + gridDim.x, ...; a candidate that is the first real row
// of its slot in this step (its "leader") makes the block process all rows of that slot in order,
// carrying the slot's state in registers/shared memory and writing it back at the end. Each
// (slot, state part) is so owned by exactly one block: no atomics, no host sync, no scratch.
constexpr int kThreads = 128;
// Candidate groups (grid x): more distinct slots than this in one step are taken in turn.
constexpr int kRuleGroups = 256;
constexpr int kConvGroups = 128;

// Block-wide (uniform result): whether `cand` is a real row with no real row of its slot before it.
__device__ bool first_row_of_slot(const int32_t* pos, const int32_t* slot, int cand) {
  if (pos[cand] < 0) return false;  // every thread reads the same value
  const int s = slot[cand];
  // Backwards in windows of kThreads rows: a prefill's previous row ends the search at once.
  for (int hi = cand; hi > 0; hi -= kThreads) {
    const int r = hi - 1 - static_cast<int>(threadIdx.x);
    const bool same = r >= 0 && pos[r] >= 0 && slot[r] == s;
    if (__syncthreads_or(same)) return false;
  }
  return true;
}

// Block-wide: the real rows of slot `s` among [r0, r0 + kThreads), in order, into rows[]; returns
// their count. `masks` holds kThreads / 32 words.
__device__ int gather_slot_rows(const int32_t* pos, const int32_t* slot, int n_tokens, int r0, int s, int* rows,
                                unsigned* masks) {
  const int r = r0 + static_cast<int>(threadIdx.x);
  const bool match = r < n_tokens && pos[r] >= 0 && slot[r] == s;
  const unsigned ballot = __ballot_sync(0xffffffffu, match);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) masks[warp] = ballot;
  __syncthreads();
  int before = __popc(ballot & ((1u << lane) - 1u)), total = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) {
    const int c = __popc(masks[w]);
    if (w < warp) before += c;
    total += c;
  }
  if (match) rows[before] = r;
  __syncthreads();
  return total;
}

// ---------------------------------------------------------------------------------------------
// delta_conv: grid (candidate groups, channel tiles of kConvCh). The leader's block stages the
// slot's rows kConvRows at a time behind the K-1 carried inputs (hist), computes every (row,
// channel) of the stage in parallel, then keeps the last K-1 inputs for the next stage.
constexpr int kConvCh = 32;
constexpr int kConvRows = 32;
constexpr int kMaxConvK = 16;
constexpr int kConvKeep = ((kMaxConvK - 1) * kConvCh + kThreads - 1) / kThreads;

struct ConvParams {
  int n_tokens, C, K;
  const int32_t* pos;
  const int32_t* slot;
  const float* w;
  const float* x;
  int64_t x_stride;
  float* conv_state;
  float* y;
  int64_t y_stride;
};

__global__ void __launch_bounds__(kThreads) delta_conv_kernel(ConvParams p) {
  grid_dependency_wait();
  __shared__ float hist[kMaxConvK - 1 + kConvRows][kConvCh];
  __shared__ float ws[kConvCh][kMaxConvK];
  __shared__ int rows[kThreads];
  __shared__ unsigned masks[kThreads / 32];
  const int c0 = blockIdx.y * kConvCh, H = p.K - 1, tid = threadIdx.x;
  for (int i = tid; i < kConvCh * p.K; i += kThreads) {
    const int cc = i / p.K, j = i % p.K;
    ws[cc][j] = c0 + cc < p.C ? p.w[static_cast<int64_t>(c0 + cc) * p.K + j] : 0.0f;
  }
  __syncthreads();
  for (int cand = blockIdx.x; cand < p.n_tokens; cand += gridDim.x) {
    if (!first_row_of_slot(p.pos, p.slot, cand)) continue;
    const int s = p.slot[cand];
    const bool fresh = p.pos[cand] == 0;  // a new sequence: zeros before its first input
    float* st = p.conv_state + static_cast<int64_t>(s) * H * p.C;
    for (int i = tid; i < H * kConvCh; i += kThreads) {
      const int j = i / kConvCh, cc = i % kConvCh, c = c0 + cc;
      hist[j][cc] = !fresh && c < p.C ? st[static_cast<int64_t>(j) * p.C + c] : 0.0f;
    }
    for (int r0 = cand; r0 < p.n_tokens; r0 += kThreads) {
      const int n = gather_slot_rows(p.pos, p.slot, p.n_tokens, r0, s, rows, masks);
      for (int b0 = 0; b0 < n; b0 += kConvRows) {
        const int nb = min(kConvRows, n - b0);
        // x is read completely before y is written, so y may alias x.
        for (int i = tid; i < nb * kConvCh; i += kThreads) {
          const int rr = i / kConvCh, cc = i % kConvCh, c = c0 + cc;
          hist[H + rr][cc] = c < p.C ? p.x[rows[b0 + rr] * p.x_stride + c] : 0.0f;
        }
        __syncthreads();
        for (int i = tid; i < nb * kConvCh; i += kThreads) {
          const int rr = i / kConvCh, cc = i % kConvCh, c = c0 + cc;
          if (c >= p.C) continue;
          float acc = 0.0f;
          for (int j = 0; j < p.K; ++j) acc += ws[cc][j] * hist[rr + j][cc];
          p.y[rows[b0 + rr] * p.y_stride + c] = acc / (1.0f + __expf(-acc));
        }
        // hist[j] = hist[nb + j] for j < K-1; the ranges overlap when nb < K-1, hence the copy
        // through registers between two barriers.
        float keep[kConvKeep];
        __syncthreads();
#pragma unroll
        for (int u = 0; u < kConvKeep; ++u) {
          const int i = tid + u * kThreads;
          if (i < H * kConvCh) keep[u] = hist[nb + i / kConvCh][i % kConvCh];
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < kConvKeep; ++u) {
          const int i = tid + u * kThreads;
          if (i < H * kConvCh) hist[i / kConvCh][i % kConvCh] = keep[u];
        }
        __syncthreads();
      }
    }
    for (int i = tid; i < H * kConvCh; i += kThreads) {
      const int j = i / kConvCh, cc = i % kConvCh, c = c0 + cc;
      if (c < p.C) st[static_cast<int64_t>(j) * p.C + c] = hist[j][cc];
    }
    __syncthreads();  // hist is reused by the block's next slot
  }
}

// ---------------------------------------------------------------------------------------------
// delta_rule: grid (candidate groups, value heads, value-column tiles of kRuleCols). The columns
// of a head's state M (value index m) evolve independently given q, k, g, beta:
//   M[:,m] = exp(g) M[:,m];  d_m = beta (v_m - M[:,m] . k);  M[:,m] += d_m k;  o_m = M[:,m] . q
// so a block owns kRuleCols columns; kRuleSplit adjacent lanes share a column, each holding every
// kRuleSplit-th key row of it in registers (SK / kRuleSplit floats), and reduce the two dot
// products with shuffles. Rows of the slot run one after another, one barrier each; the next
// row's inputs are loaded while the current one is computed.
constexpr int kRuleSplit = 4;
constexpr int kRuleCols = kThreads / kRuleSplit;

struct RuleParams {
  int n_tokens, Hk, Hv, S;
  float eps;
  const int32_t* pos;
  const int32_t* slot;
  const float* q;
  const float* k;
  int64_t qk_stride;
  const float* v;
  int64_t v_stride;
  const float* g;
  const float* beta;
  float* state;
  float* out;
};

// SK: S rounded up to 32, 64 or 128; key rows S..SK-1 stay zero.
template <int SK>
__global__ void __launch_bounds__(kThreads) delta_rule_kernel(RuleParams p) {
  static_assert(SK <= kThreads && SK % kRuleSplit == 0, "one q/k element per thread");
  constexpr int PER = SK / kRuleSplit;
  grid_dependency_wait();
  __shared__ float qs[2][SK], ks[2][SK];
  __shared__ float2 red[2][kThreads / 32];
  __shared__ int rows[kThreads];
  __shared__ unsigned masks[kThreads / 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int h = blockIdx.y, kh = h % p.Hk;  // value heads tile the key heads
  const int r = tid % kRuleSplit, m = blockIdx.z * kRuleCols + tid / kRuleSplit;
  const bool col = m < p.S;
  const float q_scale = rsqrtf(static_cast<float>(p.S));
  const int64_t out_stride = static_cast<int64_t>(p.Hv) * p.S;
  float M[PER];
  int par = 0;  // double-buffered shared inputs: one barrier per row suffices
  for (int cand = blockIdx.x; cand < p.n_tokens; cand += gridDim.x) {
    if (!first_row_of_slot(p.pos, p.slot, cand)) continue;
    const int s = p.slot[cand];
    float* st = p.state + (static_cast<int64_t>(s) * p.Hv + h) * p.S * p.S;
    const bool fresh = p.pos[cand] == 0;
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int i = r + kRuleSplit * j;
      M[j] = !fresh && col && i < p.S ? st[static_cast<int64_t>(i) * p.S + m] : 0.0f;
    }
    for (int r0 = cand; r0 < p.n_tokens; r0 += kThreads) {
      const int n = gather_slot_rows(p.pos, p.slot, p.n_tokens, r0, s, rows, masks);
      float nq = 0.0f, nk = 0.0f, nv = 0.0f, ng = 0.0f, nbeta = 0.0f;
      int npos = 0;
      auto load = [&](int row) {
        const int64_t qk = row * p.qk_stride + static_cast<int64_t>(kh) * p.S + tid;
        nq = tid < p.S ? p.q[qk] : 0.0f;
        nk = tid < p.S ? p.k[qk] : 0.0f;
        nv = col ? p.v[row * p.v_stride + static_cast<int64_t>(h) * p.S + m] : 0.0f;
        ng = p.g[static_cast<int64_t>(row) * p.Hv + h];
        nbeta = p.beta[static_cast<int64_t>(row) * p.Hv + h];
        npos = p.pos[row];
      };
      if (n > 0) load(rows[0]);
      for (int i = 0; i < n; ++i) {
        if (tid < SK) {
          qs[par][tid] = nq;
          ks[par][tid] = nk;
        }
        const float2 ss = make_float2(warp_sum(nq * nq), warp_sum(nk * nk));
        if (lane == 0) red[par][warp] = ss;
        const float v = nv, g = ng, beta = nbeta;
        const int row = rows[i], pos = npos;
        __syncthreads();
        if (i + 1 < n) load(rows[i + 1]);
        float sq = 0.0f, sk = 0.0f;
#pragma unroll
        for (int w = 0; w < kThreads / 32; ++w) {
          sq += red[par][w].x;
          sk += red[par][w].y;
        }
        // L2 norms per head (x / max(||x||, eps)) folded into the dot products.
        const float qn = q_scale / fmaxf(sqrtf(sq), p.eps), kn = 1.0f / fmaxf(sqrtf(sk), p.eps);
        if (pos == 0) {
#pragma unroll
          for (int j = 0; j < PER; ++j) M[j] = 0.0f;
        }
        const float decay = __expf(g);
        float a = 0.0f;
#pragma unroll
        for (int j = 0; j < PER; ++j) {
          M[j] *= decay;
          a = fmaf(M[j], ks[par][r + kRuleSplit * j], a);
        }
#pragma unroll
        for (int off = 1; off < kRuleSplit; off <<= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
        const float dk = beta * (v - kn * a) * kn;  // d_m, times the key's normalization
        float o = 0.0f;
#pragma unroll
        for (int j = 0; j < PER; ++j) {
          M[j] = fmaf(ks[par][r + kRuleSplit * j], dk, M[j]);
          o = fmaf(M[j], qs[par][r + kRuleSplit * j], o);
        }
#pragma unroll
        for (int off = 1; off < kRuleSplit; off <<= 1) o += __shfl_xor_sync(0xffffffffu, o, off);
        if (r == 0 && col) p.out[row * out_stride + static_cast<int64_t>(h) * p.S + m] = o * qn;
        par ^= 1;
      }
    }
    if (col) {
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        const int i = r + kRuleSplit * j;
        if (i < p.S) st[static_cast<int64_t>(i) * p.S + m] = M[j];
      }
    }
    __syncthreads();
  }
}

void check_shape(const DeltaNetShape& s, const char* op) {
  if (s.n_k_heads <= 0 || s.n_v_heads <= 0 || s.n_v_heads % s.n_k_heads != 0)
    throw Error(std::string(op) + ": " + std::to_string(s.n_v_heads) + " value heads over " +
                std::to_string(s.n_k_heads) + " key heads (need a positive multiple)");
  if (s.head < 1 || s.head > 128)
    throw Error(std::string(op) + ": head size " + std::to_string(s.head) + " unsupported (1..128)");
  if (s.n_v_heads > 65535)
    throw Error(std::string(op) + ": " + std::to_string(s.n_v_heads) + " value heads (max 65535)");
}

}  // namespace

void delta_conv(const DeltaNetArgs& a, const float* w, const float* x, int64_t x_stride, float* conv_state, float* y,
                int64_t y_stride, const Launch& s) {
  if (a.n_tokens <= 0) return;
  check_shape(a.shape, "cuda::delta_conv");
  if (a.shape.conv_kernel < 1 || a.shape.conv_kernel > kMaxConvK)
    throw Error("cuda::delta_conv: conv kernel " + std::to_string(a.shape.conv_kernel) + " unsupported (1.." +
                std::to_string(kMaxConvK) + ")");
  const ConvParams p{a.n_tokens, a.shape.channels(), a.shape.conv_kernel, a.pos, a.slot,  w,
                     x,          x_stride,           conv_state,          y,     y_stride};
  const dim3 grid(static_cast<unsigned>(std::min(a.n_tokens, kConvGroups)),
                  static_cast<unsigned>((p.C + kConvCh - 1) / kConvCh));
  launch_kernel(s, delta_conv_kernel, grid, dim3(kThreads), p);
  PIPELLM_CUDA_LAUNCH_CHECK("delta_conv");
}

void delta_rule(const DeltaNetArgs& a, const float* q, const float* k, int64_t qk_stride, const float* v,
                int64_t v_stride, const float* g, const float* beta, float* state, float* out, const Launch& s) {
  if (a.n_tokens <= 0) return;
  check_shape(a.shape, "cuda::delta_rule");
  RuleParams p{};
  p.n_tokens = a.n_tokens;
  p.Hk = a.shape.n_k_heads;
  p.Hv = a.shape.n_v_heads;
  p.S = a.shape.head;
  p.eps = a.eps;
  p.pos = a.pos;
  p.slot = a.slot;
  p.q = q;
  p.k = k;
  p.qk_stride = qk_stride;
  p.v = v;
  p.v_stride = v_stride;
  p.g = g;
  p.beta = beta;
  p.state = state;
  p.out = out;
  const dim3 grid(static_cast<unsigned>(std::min(a.n_tokens, kRuleGroups)), static_cast<unsigned>(p.Hv),
                  static_cast<unsigned>((p.S + kRuleCols - 1) / kRuleCols));
  if (p.S <= 32)
    launch_kernel(s, delta_rule_kernel<32>, grid, dim3(kThreads), p);
  else if (p.S <= 64)
    launch_kernel(s, delta_rule_kernel<64>, grid, dim3(kThreads), p);
  else
    launch_kernel(s, delta_rule_kernel<128>, grid, dim3(kThreads), p);
  PIPELLM_CUDA_LAUNCH_CHECK("delta_rule");
}

}  // namespace pipellm::cuda

#include "kernels/cuda/rope.h"

#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kMaxHeadDim = 256;

// One warp per (token, head); heads 0..n_head-1 are q, then n_head_kv k heads, then v heads.
__global__ void __launch_bounds__(32) rope_kv_kernel(RopeKvArgs a) {
  grid_dependency_wait();
  const int t = blockIdx.x, hh = blockIdx.y, lane = threadIdx.x;
  const int p = a.pos[t];
  if (p < 0) return;
  const int D = a.head_dim;
  const int kind = hh < a.n_head ? 0 : (hh < a.n_head + a.n_head_kv ? 1 : 2);
  const int h = kind == 0 ? hh : (kind == 1 ? hh - a.n_head : hh - a.n_head - a.n_head_kv);
  const float* src = kind == 0 ? a.q + t * a.q_stride + h * D : (kind == 1 ? a.k : a.v) + t * a.kv_stride + h * D;
  const float* bias = kind == 0 ? a.bq : (kind == 1 ? a.bk : a.bv);
  const float* nw = kind == 0 ? a.q_norm : (kind == 1 ? a.k_norm : nullptr);
  const bool normalize = nw != nullptr || (kind == 2 && a.v_norm);
  __shared__ float buf[kMaxHeadDim];
  float ss = 0.0f;
  for (int i = lane; i < D; i += 32) {
    float v = src[i];
    if (bias) v += bias[h * D + i];
    buf[i] = v;
    ss += v * v;
  }
  if (normalize) {
    ss = warp_sum(ss);
    const float sc = rsqrtf(ss / static_cast<float>(D) + a.norm_eps);
    for (int i = lane; i < D; i += 32) buf[i] = buf[i] * sc * (nw ? nw[i] : 1.0f);
  }
  __syncwarp();
  if (kind != 2) {
    const int half = a.n_rot / 2;
    // The cos/sin magnitude of kernels/cpu/rope.cpp (rope_angles); exactly 1 without YaRN and
    // attn_factor 1, so that case is unchanged.
    double mscale = a.attn_factor;
    if (a.ext_factor != 0.0f) mscale *= 1.0 + 0.1 * log(1.0 / a.freq_scale);
    for (int i = lane; i < half; i += 32) {
      double theta;
      if (a.ext_factor == 0.0f) {
        theta = static_cast<double>(p) * a.freq_scale * pow(static_cast<double>(a.base), -2.0 * i / a.n_rot);
        if (a.freq_factors) theta /= a.freq_factors[i];
      } else {
        // YaRN: the extrapolated angle mixed into the interpolated one below corr_dims[1].
        double extrap = static_cast<double>(p) * pow(static_cast<double>(a.base), -2.0 * i / a.n_rot);
        if (a.freq_factors) extrap /= a.freq_factors[i];
        const double y = (i - a.corr_dims[0]) / fmax(0.001, static_cast<double>(a.corr_dims[1] - a.corr_dims[0]));
        const double m = a.ext_factor * (1.0 - fmin(1.0, fmax(0.0, y)));
        theta = extrap * a.freq_scale * (1.0 - m) + extrap * m;
      }
      double sn, cs;
      sincos(theta, &sn, &cs);
      const int i0 = a.neox ? i : 2 * i, i1 = a.neox ? i + half : 2 * i + 1;
      const float x0 = buf[i0], x1 = buf[i1];
      const float c = static_cast<float>(cs * mscale), s = static_cast<float>(sn * mscale);
      buf[i0] = x0 * c - x1 * s;
      buf[i1] = x0 * s + x1 * c;
    }
  }
  __syncwarp();
  if (kind == 0) {
    float* dst = a.q + t * a.q_stride + h * D;
    for (int i = lane; i < D; i += 32) dst[i] = buf[i];
  } else {
    const int64_t row = static_cast<int64_t>(a.slot[t]) * a.n_ctx + p % a.n_ctx;  // a ring for sliding-window layers
    __half* dst = (kind == 1 ? a.k_cache : a.v_cache) + row * a.n_head_kv * D + h * D;
    for (int i = lane; i < D; i += 32) dst[i] = __float2half_rn(buf[i]);
  }
}

}  // namespace

void rope_kv_store(const RopeKvArgs& a, const Launch& s) {
  if (a.n_tokens == 0) return;
  if (a.head_dim > kMaxHeadDim || a.n_rot > a.head_dim || a.n_rot % 2 != 0)
    throw Error("rope_kv_store: head_dim " + std::to_string(a.head_dim) + ", n_rot " + std::to_string(a.n_rot) +
                " unsupported (head_dim <= 256, even n_rot <= head_dim)");
  // Without k only the query heads run (a layer reading another layer's cache).
  const int heads = a.n_head + (a.k != nullptr ? 2 * a.n_head_kv : 0);
  const dim3 grid(static_cast<unsigned>(a.n_tokens), static_cast<unsigned>(heads));
  launch_kernel(s, rope_kv_kernel, grid, dim3(32), a);
  PIPELLM_CUDA_LAUNCH_CHECK("rope_kv_store");
}

}  // namespace pipellm::cuda

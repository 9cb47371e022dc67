#include "kernels/cuda/rope.h"

#include <string>

#include "kernels/cpu/block_formats.h"
#include "kernels/cpu/kv_quant.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_util.cuh"

namespace pipellm::cuda {
namespace {

constexpr int kMaxHeadDim = 512;  // Gemma 4's global layers

// One block of 32 values, one per lane, into Q8_0 / Q4_0 (kernels/cpu/kv_quant.h, whose element
// functions make each lane's code bit-identical to the CPU store).
__device__ __forceinline__ void store_q8_0(float x, BlockQ8_0* b, int lane) {
  const float amax = fmaxf(warp_max(fabsf(x)), 0.0f);  // NaN-free as the CPU's fmax chain from 0
  const float d = kvq::q8_scale(amax);
  b->qs[lane] = kvq::q8_code(x, kvq::inverse(d));
  if (lane == 0) b->d = kvq::to_fp16_bits(d);
}

__device__ __forceinline__ void store_q4_0(float x, BlockQ4_0* b, int lane) {
  // The signed value of largest magnitude, the lowest lane on ties (the CPU's first index); +0
  // for a block of zeros, as the CPU's scan that never finds |x| > 0.
  const float ax = fabsf(x);
  const float amax = fmaxf(warp_max(ax), 0.0f);
  const unsigned who = __ballot_sync(0xffffffffu, ax == amax);
  const float at = __shfl_sync(0xffffffffu, x, who != 0 ? __ffs(who) - 1 : 0);
  const float mx = amax > 0.0f && who != 0 ? at : 0.0f;
  const float d = kvq::q4_scale(mx);
  const int code = kvq::q4_code(x, kvq::inverse(d));
  const int high = __shfl_down_sync(0xffffffffu, code, 16);  // element j + 16 shares byte j
  if (lane < kQK / 2) b->qs[lane] = static_cast<uint8_t>(code | (high << 4));
  if (lane == 0) b->d = kvq::to_fp16_bits(d);
}

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
    const TensorType type = kind == 1 ? a.k_type : a.v_type;
    const int64_t hb = kvq::head_bytes(type, D);
    uint8_t* dst = static_cast<uint8_t*>(kind == 1 ? a.k_cache : a.v_cache) + (row * a.n_head_kv + h) * hb;
    if (type == TensorType::F16) {
      __half* hd = reinterpret_cast<__half*>(dst);
      for (int i = lane; i < D; i += 32) hd[i] = __float2half_rn(buf[i]);
    } else if (type == TensorType::Q8_0) {
      for (int b = 0; b < D / kQK; ++b) store_q8_0(buf[b * kQK + lane], reinterpret_cast<BlockQ8_0*>(dst) + b, lane);
    } else {
      for (int b = 0; b < D / kQK; ++b) store_q4_0(buf[b * kQK + lane], reinterpret_cast<BlockQ4_0*>(dst) + b, lane);
    }
  }
}

}  // namespace

void rope_kv_store(const RopeKvArgs& a, const Launch& s) {
  if (a.n_tokens == 0) return;
  if (a.head_dim > kMaxHeadDim || a.n_rot > a.head_dim || a.n_rot % 2 != 0)
    throw Error("rope_kv_store: head_dim " + std::to_string(a.head_dim) + ", n_rot " + std::to_string(a.n_rot) +
                " unsupported (head_dim <= 512, even n_rot <= head_dim)");
  if (a.k != nullptr) {  // the store's types (the kernel's type switch trusts them)
    for (const TensorType t : {a.k_type, a.v_type}) {
      const bool block = t == TensorType::Q8_0 || t == TensorType::Q4_0;
      if (t != TensorType::F16 && !block)
        throw Error(std::string("rope_kv_store: KV cache type ") + tensor_type_name(t) +
                    " unsupported (f16, q8_0, q4_0)");
      if (block && a.head_dim % kQK != 0)
        throw Error(std::string("rope_kv_store: a ") + tensor_type_name(t) +
                    " KV cache needs head_dim a multiple of 32, not " + std::to_string(a.head_dim));
    }
  }
  // Without k only the query heads run (a layer reading another layer's cache).
  const int heads = a.n_head + (a.k != nullptr ? 2 * a.n_head_kv : 0);
  const dim3 grid(static_cast<unsigned>(a.n_tokens), static_cast<unsigned>(heads));
  launch_kernel(s, rope_kv_kernel, grid, dim3(32), a);
  PIPELLM_CUDA_LAUNCH_CHECK("rope_kv_store");
}

}  // namespace pipellm::cuda

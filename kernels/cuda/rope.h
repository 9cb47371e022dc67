// Post-projection step of attention on the GPU, fused: for each token t and head,
//   q/k/v += bias (qwen2), per-head RMSNorm of q and k (qwen3), RoPE of q and k at pos[t]
//   (reference: kernels/cpu/rope.h), then q is written back in place and k, v are stored into
//   the KV cache row pos[t] of slot slot[t] (layout: engine/model/kv_cache.h) as f16, or as
//   Q8_0 / Q4_0 blocks quantized exactly as the CPU cache does (kernels/cpu/kv_quant.h: the
//   same bytes for the same floats; head_dim a multiple of 32 then).
// Tokens with pos[t] < 0 are padding: nothing is read or written for them.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include "base/tensor_type.h"
#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

struct RopeKvArgs {
  int n_tokens = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // <= 512, also the v head size
  float* q = nullptr;          // [T][q_stride]
  int64_t q_stride = 0;
  const float* k = nullptr;    // [T][kv_stride]
  const float* v = nullptr;
  int64_t kv_stride = 0;
  const float* bq = nullptr;   // biases or null
  const float* bk = nullptr;
  const float* bv = nullptr;
  const float* q_norm = nullptr;  // [head_dim] or null
  const float* k_norm = nullptr;
  float norm_eps = 1e-6f;
  const int32_t* pos = nullptr;   // device [T]
  const int32_t* slot = nullptr;  // device [T]
  void* k_cache = nullptr;        // this layer's [n_slots][n_ctx][n_head_kv*head_dim] of k_type
  void* v_cache = nullptr;        // of v_type
  TensorType k_type = TensorType::F16;  // F16, Q8_0 or Q4_0
  TensorType v_type = TensorType::F16;
  int n_ctx = 0;  // rows per slot: key/position p lives in row p % n_ctx (a ring for sliding-window layers)
  int n_rot = 0;
  float base = 10000.0f;
  float freq_scale = 1.0f;
  const float* freq_factors = nullptr;  // [n_rot/2] or null
  bool neox = false;
  // YaRN (gpt-oss) and the cos/sin magnitude: kernels/cpu/rope.h (RopeParams) has the formula.
  float ext_factor = 0.0f;
  float attn_factor = 1.0f;
  float corr_dims[2] = {0.0f, 0.0f};
  // q/k/v rows may be parts of one fused product row (phi3): q at q, k at k, v at v, all rows
  // q_stride / kv_stride apart (as above).
  // gemma4: V RMS-normed per head without a weight before it is stored; k == nullptr for a layer
  // that reads another layer's cache (only q is normed and rotated, nothing is stored).
  bool v_norm = false;
};

void rope_kv_store(const RopeKvArgs& a, const Launch& s);

}  // namespace pipellm::cuda

// The CPU forward pass of one pipeline stage (or of a whole model: all layers, first and last).
//
// Data layout, mirrored by the CUDA engine:
// - activations are row-major [n_tokens][width] float32 (x: residual stream [T][n_embd];
//   q [T][n_head*head_dim], k [T][n_head_kv*head_dim], v [T][n_head_kv*head_dim_v], heads
//   contiguous inside a row; ffn gate/up [T][n_ff]);
// - weights stay in their GGUF blocks inside the mapping; small 1-D tensors (norms, biases,
//   rope_freqs) are decoded to float once at construction;
// - the KV cache is described in engine/model/kv_cache.h.
//
// Per layer: h = rmsnorm(x)*attn_norm; q,k,v = h W^T (+bias); [qwen3] per-head rmsnorm of q,k;
// RoPE(q,k) at each token's position; store k,v in the cache; causal attention over the
// slot's positions [0,pos]; x += attn W_o^T; h = rmsnorm(x)*ffn_norm;
// x += (silu(h W_gate^T) * (h W_up^T)) W_down^T. Tail: rmsnorm(x)*output_norm, then W_out^T for
// the rows whose logits are wanted.
#pragma once
#include <memory>
#include <vector>

#include "engine/model/kv_cache.h"
#include "engine/model/host_stage.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rope.h"

namespace pipellm {

struct CpuStageOptions {
  int n_ctx = 2048;
  int n_slots = 1;
  TensorType kv_type = TensorType::F16;
};

class CpuStage : public HostStage {
 public:
  // `f` and `pool` must outlive the stage.
  CpuStage(const GgufFile& f, const ModelConfig& c, LayerRange range, bool first, bool last,
           const CpuStageOptions& opt, ThreadPool& pool);

  const ModelConfig& config() const override { return cfg_; }
  LayerRange range() const override { return weights_.range; }
  bool is_first() const override { return first_; }
  bool is_last() const override { return last_; }
  int n_ctx() const override { return cache_.n_ctx(); }
  int n_slots() const override { return cache_.n_slots(); }
  void forward(const Batch& batch, std::vector<float>& out) override;

  const ModelWeights& weights() const { return weights_; }
  const KvCache& cache() const { return cache_; }

 private:
  struct LayerFloats {  // decoded 1-D tensors of a layer (empty when absent)
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv, q_norm, k_norm;
  };

  void validate(const Batch& b);
  void embed(const Batch& b);
  void run_layer(int il, const Batch& b);
  void output(const Batch& b, std::vector<float>& out);
  void for_tokens(int n, const std::function<void(int64_t, int64_t)>& fn);
  MatmulArgs product(const TensorView& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                     int64_t y_stride) const;

  ModelConfig cfg_;
  ModelWeights weights_;
  bool first_, last_;
  ThreadPool& pool_;
  KvCache cache_;
  std::vector<LayerFloats> lf_;
  std::vector<float> output_norm_, rope_freqs_;
  RopeParams rope_;
  std::vector<int32_t> filled_;  // per slot: positions [0, filled) hold valid K/V

  // Scratch, resized per batch.
  std::vector<float> x_, h_, q_, k_, v_, att_, tmp_, gate_, up_, cs_;
  std::vector<int32_t> n_kv_;
  std::vector<const uint8_t*> kp_, vp_;
};

}  // namespace pipellm

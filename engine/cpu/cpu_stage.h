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
// Per layer (what is optional is the layer's LayerSpec, engine/model/model_config.h):
// h = rmsnorm(x)*attn_norm; q,k,v = h W^T (+bias; or one fused qkv product); per-head rmsnorm
// of q,k; RoPE(q,k) at each token's position (the layer's rope); store k,v in the cache;
// attention over the slot's positions [0,pos] (or the sliding window; sinks); o = attn W_o^T
// (+bias) (rmsnorm(o)*post_attn_norm); x += o; h = rmsnorm(x)*ffn_norm; f = down(act(gate h, up h))
// or, for MoE layers, the routed sum over the token's experts; (rmsnorm(f)*post_ffn_norm); x += f.
// Tail: rmsnorm(x)*output_norm, then W_out^T (softcapped) for the rows whose logits are wanted.
#pragma once
#include <array>
#include <memory>
#include <optional>
#include <vector>

#include "engine/cpu/routed_experts.h"
#include "engine/model/kv_cache.h"
#include "engine/model/host_stage.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rope.h"

namespace pipellm {

struct CpuStageOptions {
  int n_ctx = 2048;
  int n_slots = 1;
  // KV cache element types (engine/model/kv_cache.h): kv_type for K and V, unless kv_type_k /
  // kv_type_v set one side (llama.cpp's --cache-type-k / --cache-type-v): f16, f32, q8_0, q4_0.
  TensorType kv_type = TensorType::F16;
  std::optional<TensorType> kv_type_k, kv_type_v;
  TensorType k_type() const { return kv_type_k.value_or(kv_type); }
  TensorType v_type() const { return kv_type_v.value_or(kv_type); }
  int max_batch_tokens = 512;  // longer batches run in chunks (sizes the sliding-window KV rings)
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
  // Embeddings (engine/runtime/embedding.h): the same pass as forward() on a last stage, but
  // `out` becomes the final-norm hidden states rmsnorm(x)*output_norm of the rows whose
  // `logits` flag is set, [n_outputs][n_embd], instead of their logits (no output product).
  // Throws InvalidArgument on a stage without the final norm (not the last one).
  void forward_hidden(const Batch& batch, std::vector<float>& out);

  const ModelWeights& weights() const { return weights_; }
  const KvCache& cache() const { return cache_; }

 private:
  // Decoded 1-D tensors of a layer (norms, biases, sinks) by role; empty when absent.
  struct LayerFloats {
    std::array<std::vector<float>, kLayerTensorCount> v;
    const std::vector<float>& operator[](LayerTensor r) const { return v[static_cast<size_t>(r)]; }
    const float* ptr(LayerTensor r) const { return v[static_cast<size_t>(r)].empty() ? nullptr : v[static_cast<size_t>(r)].data(); }
  };

  void validate(const Batch& b);
  void forward_chunk(const Batch& b, std::vector<float>& out);
  void embed(const Batch& b);
  void run_layer(int il, const Batch& b);
  void attention_block(int il, const Batch& b);  // leaves the block's output in tmp_
  void delta_block(int il, const Batch& b);      // Gated DeltaNet: output in tmp_
  void dense_ffn(int il, int T);                 // h_ -> tmp_
  void moe_ffn(int il, int T);                   // h_ -> tmp_
  void norm_rows(float* x, const float* w, int T, int64_t n);  // in place
  void per_layer_inputs(const Batch& b);     // gemma4: inp_pl_ from the token ids
  void per_layer_block(int il, int T);       // gemma4: x += rms(proj(gelu(inp_gate x) * inp_pl)) * post_norm
  void output(const Batch& b, std::vector<float>& out);
  void for_tokens(int n, const std::function<void(int64_t, int64_t)>& fn);
  MatmulArgs product(const TensorView& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                     int64_t y_stride) const;

  ModelConfig cfg_;
  ModelWeights weights_;
  bool first_, last_;
  int max_batch_;
  ThreadPool& pool_;
  KvCache cache_;
  std::vector<LayerFloats> lf_;
  std::vector<float> output_norm_, rope_freqs_;
  std::vector<RopeParams> ropes_;  // distinct rope settings of the stage's layers
  std::vector<int> layer_rope_;    // per local layer: index into ropes_
  std::vector<int32_t> filled_;  // per slot: positions [0, filled) hold valid K/V
  bool hidden_out_ = false;      // forward_hidden(): output() stops after the final norm

  // Scratch, resized per batch.
  std::vector<float> x_, h_, q_, k_, v_, qkv_, att_, tmp_, gate_, up_, cs_;
  // MoE scratch: router logits, per token the chosen experts and weights, the shared expert's rows.
  std::vector<float> router_, route_w_, eg_, eu_, ed_;
  std::vector<int32_t> route_id_;
  RoutedExperts experts_;
  // DeltaNet: per local layer the slots' conv and recurrent states (empty for attention layers),
  // and scratch (projections, one slot's rows).
  std::vector<std::vector<float>> conv_state_, delta_state_;
  std::vector<float> dz_, dg_, dbeta_, dx_, dy_, dout_;
  bool recurrent_ = false;
  std::vector<float> inp_pl_, pl_tmp_, dense_;  // gemma4: [T][n_layer * P] per-layer inputs, scratch
  std::vector<float> per_layer_proj_norm_;
  std::vector<int32_t> n_kv_;
  std::vector<const uint8_t*> kp_, vp_;
};

}  // namespace pipellm

// The forward pass of one pipeline stage (or a whole model) on one NVIDIA GPU.
//
// Mirrors engine/cpu/cpu_stage.h: same Batch semantics, same activations ([T][width] f32), same
// KV cache layout (engine/model/kv_cache.h; f16 on the device). Products use the quantized
// mat-vec kernels for up to 8 tokens and cuBLAS on f16 (dequantized) weights beyond.
//
// decode() is the fast path for token generation: one token per sequence, sampled on the GPU
// (only ids come back). Its whole step (every layer and the sampler) is captured once per
// (batch bucket 1/2/4/8/16/32/64/..., context bucket 512/1024/2048/...) as a CUDA graph and
// replayed; tokens, positions and slots are read from device memory, so a replay needs only one
// small host-to-device copy. use_graphs = false runs the same kernels eagerly (the ablation).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "engine/cuda/cuda_weights.h"
#include "engine/cuda/streamed_weights.h"
#include "engine/model/stage.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/sampling.h"

namespace pipellm::cuda {

struct CudaStageOptions {
  int device = 0;
  int n_ctx = 2048;
  int n_slots = 1;
  int max_batch_tokens = 512;  // tokens per forward chunk (prefill)
  bool use_graphs = true;
  bool resident_f16 = false;   // keep f16 copies of the matrices (faster prefill / large batches)
  StreamingOptions streaming;  // a VRAM budget: stream the layers that do not fit (docs/PREFETCH.md)
  bool pdl = true;             // programmatic dependent launch between kernels (kernels/cuda/launch.h)
};

class CudaStage : public Stage {
 public:
  // `w` (and the memory its views point to) is only read during construction.
  CudaStage(const ModelConfig& c, const ModelWeights& w, bool first, bool last, const CudaStageOptions& opt);
  ~CudaStage() override;

  const ModelConfig& config() const override { return cfg_; }
  LayerRange range() const override { return range_; }
  bool is_first() const override { return first_; }
  bool is_last() const override { return last_; }
  int n_ctx() const override { return opt_.n_ctx; }
  int n_slots() const override { return opt_.n_slots; }
  void forward(const Batch& batch, std::vector<float>& out) override;
  // Used memory of the current device (cudaMemGetInfo); 0 if the query fails.
  uint64_t device_memory_bytes() const override {
    size_t free_bytes = 0, total_bytes = 0;
    return cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess ? total_bytes - free_bytes : 0;
  }

  // One decode step of n sequences (whole-model stages only): token tokens[i] at position pos[i]
  // of slot slots[i]; next[i] receives the sampled next token. Positions [0, pos[i]) of each
  // slot must be in the cache.
  void decode(const int32_t* tokens, const int32_t* pos, const int32_t* slots, int n, int32_t* next,
              const SamplingParams& sp = {});
  // The logits of the last decode() call ([n][n_vocab]), for tests.
  void last_decode_logits(int n, std::vector<float>& out) const;

  void set_use_graphs(bool on) { opt_.use_graphs = on; }
  // Changing PDL drops the captured graphs (their kernel nodes carry the launch attribute).
  void set_pdl(bool on) {
    if (on != opt_.pdl) graphs_.clear();
    opt_.pdl = on;
  }
  size_t graphs_captured() const { return graphs_.size(); }
  size_t weight_device_bytes() const { return weights_->device_bytes; }
  cudaStream_t stream() const { return stream_.get(); }
  const StreamedWeights* streamed() const { return streamed_.get(); }  // null without a VRAM budget

  // Decode buckets: the batch size and context length a step of n sequences up to max_pos runs as.
  static int batch_bucket(int n);
  int context_bucket(int max_pos) const;

 private:
  void validate(const Batch& b) const;
  void upload_step(const int32_t* tokens, const int32_t* pos, const int32_t* slots, int n, int padded);
  // Enqueues the forward pass of T tokens whose ids/pos/slots are in d_tok_/d_pos_/d_slot_ (or
  // whose hidden rows are in x_). n_keys: an upper bound on pos + 1 over the tokens.
  void enqueue_layers(int T, int n_keys);
  void enqueue_embed(int T);
  // Final norm + lm head over `n_out` rows of x_ starting at the rows listed (host) or all T.
  void enqueue_logits(int n_out);
  void enqueue_decode_step(int B, int ctx_bucket, const SamplingParams& sp);
  void product(const CudaMatrix& w, int T, float* y, int64_t y_stride, bool add);
  void product_input(int T, const float* x, int64_t n, const float* norm_w, bool normalize);
  // PDL only inside decode steps, whose kernels follow kernels (never a host copy).
  Launch launch() const { return Launch(stream_.get(), opt_.pdl && in_decode_); }

  ModelConfig cfg_;
  LayerRange range_;
  bool first_, last_;
  CudaStageOptions opt_;
  int max_tokens_ = 0;

  Stream stream_;
  CublasHandle cublas_;
  std::unique_ptr<StreamedWeights> streamed_;
  std::unique_ptr<CudaWeights> weights_;
  std::vector<DeviceBuffer<__half>> k_cache_, v_cache_;

  DeviceBuffer<uint8_t> cublas_ws_;
  DeviceBuffer<int32_t> d_io_;  // [3][max_tokens_]: tokens, positions, slots
  int32_t* d_tok_ = nullptr;
  int32_t* d_pos_ = nullptr;
  int32_t* d_slot_ = nullptr;
  DeviceBuffer<int32_t> d_next_;
  DeviceBuffer<uint64_t> d_counter_;
  PinnedBuffer<int32_t> h_io_, h_next_;
  DeviceBuffer<float> x_, y_, q_, k_, v_, att_, g_, u_, act_, logits_, attn_part_;
  DeviceBuffer<int8_t> xq_;
  DeviceBuffer<float2> xds_;
  DeviceBuffer<__half> xh_, wh_;
  int64_t attn_part_floats_ = 0;

  std::map<std::pair<int, int>, GraphExec> graphs_;
  SamplingParams graph_sp_{};
  int last_decode_rows_ = 0;
  bool in_decode_ = false;
};

}  // namespace pipellm::cuda

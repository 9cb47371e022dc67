// A CUDA stage's routed experts kept in host memory (--cpu-moe, --n-cpu-moe, -ot: engine/model/
// expert_placement.h). Everything else of those layers (attention, router, shared expert, norms,
// expert biases) stays on the GPU.
// - Decode and small steps: per MoE layer the stage's stream copies the experts' input rows, the
//   chosen ids, their weights and the rows' positions to pinned host memory, a host function (a
//   node of the captured decode graph) has the CPU multiply the chosen experts
//   (engine/cpu/routed_experts.h, one 8-bit rounding of the activations as the GPU's expert
//   kernels), and the weighted sums come back. A decode token reads only its few experts, so
//   host-memory bandwidth is what bounds it.
// - Prefill chunks and large batches (kUploadMinRows rows and more): the layers' stacks stream
//   from pinned host memory through a ring of two device slots (weight_streamer.h: the next host
//   layer copies while this one computes), repacked on the device where the type needs it, and
//   take the GPU's grouped expert products: PCIe moves a layer faster than the CPU multiplies so
//   many rows.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/cpu/routed_experts.h"
#include "engine/cuda/cuda_weights.h"
#include "engine/cuda/host_errors.h"
#include "engine/cuda/registered_host_buffer.h"
#include "engine/cuda/expert_cache.h"
#include "engine/cuda/weight_streamer.h"
#include "engine/model/model_weights.h"
#include "engine/util/thread_pool.h"
#include "kernels/cuda/cuda_raii.h"

namespace pipellm::cuda {

// `w` without the expert matrices of the local layers marked in `host`: what the device uploads
// (biases stay: small, and the uploaded path reads them). The views still point into w's mapping.
ModelWeights without_host_experts(const ModelWeights& w, const std::vector<bool>& host);

// Bytes of a layer's expert matrices (0 for a dense layer).
uint64_t expert_stack_bytes(const LayerWeights& l);
// Host bytes of the expert stacks of the marked local layers (what HostExperts copies).
uint64_t host_expert_bytes(const ModelWeights& w, const std::vector<bool>& host);

// Device bytes the uploads of the marked local layers take: a ring of two slots of the largest
// layer's stacks (256-byte aligned each), and the device-layout copies of its stacks whose type
// is repacked (weight_layout.h). What HostExperts allocates, for the auto-fit.
uint64_t upload_device_bytes(const ModelWeights& w, const std::vector<bool>& host);

class HostExperts {
 public:
  // From this many rows a layer's experts go to the GPU rather than to the CPU: llama.cpp moves
  // expert weights to the GPU for batches from 32 tokens too.
  static constexpr int kUploadMinRows = 32;
  static constexpr int kUploadSlots = 2;

  // Copies the expert stacks of the local layers marked in `host` out of `w` (read only here),
  // with `threads` CPU threads (0: one per hardware thread but one, left to the thread driving
  // the GPU), which then do the products; steps of up to max_tokens rows. cache_bytes > 0: that
  // much VRAM holds the most used experts (expert_cache.h), refreshed every cache_refresh steps.
  HostExperts(const ModelConfig& c, const ModelWeights& w, const std::vector<bool>& host, int max_tokens, int threads,
              uint64_t cache_bytes = 0, int cache_refresh = 32);
  HostExperts(const HostExperts&) = delete;
  HostExperts& operator=(const HostExperts&) = delete;

  bool holds(int local_layer) const {
    return local_layer >= 0 && local_layer < static_cast<int>(layers_.size()) && layers_[static_cast<size_t>(local_layer)] != nullptr;
  }
  uint64_t host_bytes() const { return bytes_; }
  int threads() const { return pool_.size(); }
  // Whether a step of T rows multiplies on the GPU: the host copies are pinned (else every step
  // multiplies on the CPU) and T is large enough.
  bool uploads(int T) const { return streamer_ != nullptr && T >= kUploadMinRows; }
  // Device bytes of the upload ring and the repacked copies; 0 without pinned copies.
  uint64_t device_bytes() const;

  // The hot-expert cache; null without one.
  ExpertCache* cache() { return cache_.get(); }
  const ExpertCache* cache() const { return cache_.get(); }
  // Before a step, on its stream (the cache's refresh).
  void maintain(cudaStream_t s) {
    if (cache_) cache_->maintain(s);
  }

  // CPU path. Enqueues on `s`: out[t] = sum over the row's K pairs of weights * expert(rows[t])
  // for T rows ([T][n_embd] device floats; ids / weights [T][K] device; pos [T] device, rows with
  // pos < 0 are padding and get zeros). host_ids (device, [T][K]; null: ids): the pairs the CPU
  // takes, -1 for those the cache took (ids are what the cache counts). Capturable: the host
  // function becomes a graph node.
  void enqueue(int local_layer, int T, const float* rows, const int32_t* ids, const int32_t* host_ids,
               const float* weights, const int32_t* pos, float* out, cudaStream_t s);

  // Upload path, for a pass whose steps upload (uploads(T)), on the compute stream `s`:
  //   begin_uploads(s); per host layer in order: { mats = upload(i, s); <products>; release(i, s); }
  //   end_uploads(s);
  // upload() returns the layer's expert matrices in the device slot (only the expert roles set).
  // Capturable, as weight_streamer.h.
  void begin_uploads(cudaStream_t s) { streamer_->begin_pass(s); }
  const CudaLayer& upload(int local_layer, cudaStream_t s);
  void release(int local_layer, cudaStream_t s);
  void end_uploads(cudaStream_t s) { streamer_->end_pass(s); }

  // Throws the Error a host function met (a host function cannot throw through CUDA; its rows
  // came back as NaN). Call after the stream has run the step.
  void rethrow() { errors_.rethrow(); }

 private:
  // A host layer: its stacks in one buffer (256-byte aligned offsets).
  struct Layer {
    std::unique_ptr<RegisteredHostBuffer> buffer;
    size_t image_bytes = 0;
    TensorView gate, up, gate_up, down;  // views into the buffer
    std::vector<float> gate_bias, up_bias, down_bias;
    ExpertStacks stacks;
    int k = 0;         // experts per token (ids and weights are [T][k])
    int position = 0;  // in the upload schedule
  };
  struct Call {
    HostExperts* self;
    int layer;
    int T;
  };
  static void CUDART_CB run_call(void* call);
  void run(int layer, int T);
  const Layer& layer(int local_layer) const;

  int64_t n_embd_ = 0;
  int k_ = 0;  // the most experts per token of any layer (sizes the pinned buffers)
  uint64_t bytes_ = 0;
  ThreadPool pool_;
  RoutedExperts experts_;
  std::vector<std::unique_ptr<Layer>> layers_;  // per local layer; null where the GPU holds them
  PinnedBuffer<float> h_rows_, h_weights_, h_out_;
  PinnedBuffer<int32_t> h_ids_, h_host_ids_, h_pos_;
  std::unique_ptr<ExpertCache> cache_;
  std::map<std::pair<int, int>, std::unique_ptr<Call>> calls_;  // (layer, T): stable for captured graphs
  std::unique_ptr<LayerStreamer> streamer_;     // null: no uploads
  DeviceBuffer<uint8_t> repacked_;              // device-layout copies of the slot's repacked stacks
  CudaLayer staged_;                            // the uploaded layer's expert matrices
  HostErrors errors_;
};

}  // namespace pipellm::cuda

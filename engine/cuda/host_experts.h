// A CUDA stage's routed experts kept in host memory (--cpu-moe, --n-cpu-moe, -ot: engine/model/
// expert_placement.h). Everything else of those layers (attention, router, shared expert, norms)
// stays on the GPU; per MoE layer the stage's stream copies the experts' input rows, the chosen
// ids, their weights and the rows' positions to pinned host memory, a host function (a node of
// the captured decode graph) has the CPU multiply the chosen experts (engine/cpu/routed_experts.h,
// one 8-bit rounding of the activations as the GPU's expert kernels), and the weighted sums come
// back. A decode token reads only its few experts, so host-memory bandwidth is what bounds it.
// Prefill chunks and large batches (kUploadMinRows rows and more) instead copy the layer's stacks
// from pinned host memory into a device slot (repacked there as at load) and take the GPU's
// grouped expert products: PCIe moves the whole layer faster than the CPU multiplies so many rows.
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
#include "engine/model/model_weights.h"
#include "engine/util/thread_pool.h"
#include "kernels/cuda/cuda_raii.h"

namespace pipellm::cuda {

// `w` without the expert matrices of the local layers marked in `host`: what the device uploads
// (biases stay: small, and the uploaded path reads them). The views still point into w's mapping.
ModelWeights without_host_experts(const ModelWeights& w, const std::vector<bool>& host);

// Host bytes of the expert stacks of the marked local layers (what HostExperts copies).
uint64_t host_expert_bytes(const ModelWeights& w, const std::vector<bool>& host);

// Device bytes of the upload slot for the marked local layers: the largest layer's stacks at
// 256-byte aligned offsets; *repack_bytes (when given): the largest stack repacked on the device
// (its raw blocks land in a scratch buffer first). What HostExperts allocates, for the auto-fit.
uint64_t upload_slot_bytes(const ModelWeights& w, const std::vector<bool>& host, uint64_t* repack_bytes = nullptr);

class HostExperts {
 public:
  // Copies the expert stacks of the local layers marked in `host` out of `w` (read only here),
  // with `threads` CPU threads (0: one per hardware thread), which then do the products; steps of
  // up to max_tokens rows.
  HostExperts(const ModelConfig& c, const ModelWeights& w, const std::vector<bool>& host, int max_tokens, int threads);
  HostExperts(const HostExperts&) = delete;
  HostExperts& operator=(const HostExperts&) = delete;

  // From this many rows a layer's experts go to the GPU (upload) rather than to the CPU: llama.cpp
  // moves expert weights to the GPU for batches from 32 tokens too.
  static constexpr int kUploadMinRows = 32;
  // Whether a step of T rows multiplies on the GPU: the host copies are pinned (else always the CPU).
  bool uploads(int T) const { return pinned_ && T >= kUploadMinRows; }
  // Device bytes of the slot (and the repack scratch) the uploads use; 0 without pinned copies.
  uint64_t device_bytes() const { return slot_.bytes() + raw_.bytes(); }

  bool holds(int local_layer) const {
    return local_layer >= 0 && local_layer < static_cast<int>(layers_.size()) && layers_[static_cast<size_t>(local_layer)] != nullptr;
  }
  uint64_t host_bytes() const { return bytes_; }
  int threads() const { return pool_.size(); }

  // Enqueues on `s`: out[t] = sum over the row's K pairs of weights * expert(rows[t]) for T rows
  // ([T][n_embd] device floats; ids / weights [T][K] device; pos [T] device, rows with pos < 0
  // are padding and get zeros). Capturable: the host function becomes a node of the graph.
  void enqueue(int local_layer, int T, const float* rows, const int32_t* ids, const float* weights, const int32_t* pos,
               float* out, cudaStream_t s);
  // Enqueues on `s` the copy of the local layer's expert stacks into the device slot (repacked
  // there); returns its matrices (only the expert roles are set), valid until the next upload in
  // stream order. Capturable (copies and kernels become graph nodes).
  const CudaLayer& upload(int local_layer, cudaStream_t s);
  // Throws the Error a host function met (a host function cannot throw through CUDA; its rows
  // came back as NaN). Call after the stream has run the step.
  void rethrow();

 private:
  // A stack's host copy: pinned when the driver grants it (uploads need it), else plain memory.
  struct HostBytes {
    PinnedBuffer<uint8_t> pinned;
    std::unique_ptr<uint8_t[]> plain;
    uint8_t* get() const { return pinned.get() != nullptr ? pinned.get() : plain.get(); }
  };
  struct Layer {
    std::vector<HostBytes> bytes;  // one buffer per stack
    TensorView gate, up, gate_up, down;
    std::vector<float> gate_bias, up_bias, down_bias;
    ExpertStacks stacks;
    int k = 0;  // experts per token (ids and weights are [T][k])
  };
  struct Call {
    HostExperts* self;
    int layer;
    int T;
  };
  static void CUDART_CB run_call(void* call);
  void run(int layer, int T);

  int64_t n_embd_ = 0;
  int k_ = 0;  // the most experts per token of any layer (sizes the pinned buffers)
  uint64_t bytes_ = 0;
  ThreadPool pool_;
  RoutedExperts experts_;
  std::vector<std::unique_ptr<Layer>> layers_;  // per local layer; null where the GPU holds them
  bool pinned_ = true;                          // every host copy is pinned
  DeviceBuffer<uint8_t> slot_, raw_;            // uploads: the layer's stacks, and raw blocks to repack
  CudaLayer staged_;                            // the uploaded layer's expert matrices (views into slot_)
  PinnedBuffer<float> h_rows_, h_weights_, h_out_;
  PinnedBuffer<int32_t> h_ids_, h_pos_;
  std::map<std::pair<int, int>, std::unique_ptr<Call>> calls_;  // (layer, T): stable for captured graphs
  std::mutex error_mutex_;
  std::string error_;
};

}  // namespace pipellm::cuda

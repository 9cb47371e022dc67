// What a CUDA stage holds on its device, by kind: the block `pipellm generate|bench --device cuda`,
// the in-process coordinator and pipellm-stage print at load (CudaStage::memory_report()). Figures
// are the bytes of the stage's own buffers (exact); CUDA graphs, which say nothing of their size,
// are measured with cudaMemGetInfo around each capture, so they grow as decode buckets are first
// used. The device line is cudaMemGetInfo when the report is made (other processes included).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/cuda/cuda_weights.h"

namespace pipellm::cuda {

struct DeviceMemoryReport {
  int device = 0;
  std::string stage;           // "layers [0, 22) +embeddings +output"
  uint64_t weight_bytes = 0;   // resident weights: matrices in their (quantized) blocks, 1-D tensors as f32
  size_t weight_tensors = 0;
  uint64_t f16_bytes = 0;      // resident f16 copies of matrices (CudaStageOptions::resident_f16)
  // Weight streaming (docs/PREFETCH.md): the device ring, and what lives in pinned host memory.
  int layers = 0, layers_streamed = 0;
  int ring_slots = 0;
  uint64_t ring_bytes = 0;
  uint64_t streamed_bytes = 0;     // crossing PCIe each pass
  uint64_t host_pinned_bytes = 0;  // streamed layers (+ embeddings read from host memory)
  bool embeddings_in_host = false;
  // Routed experts kept in host memory and multiplied by the CPU (host_experts.h): not on the device.
  int host_expert_layers = 0, host_expert_threads = 0;
  uint64_t host_expert_bytes = 0;
  uint64_t expert_cache_bytes = 0;  // on the device: the hot-expert cache (expert_cache.h)
  int expert_cache_slots = 0, expert_cache_used = 0;
  uint64_t expert_cache_hits = 0, expert_cache_pairs = 0;
  uint64_t expert_slot_bytes = 0;  // on the device: the ring (and repacked copies) large steps stream experts through
  // Rows of streamed matrices the CPU multiplies in decode (host_rows.h), in host memory, and what
  // their uploads for larger steps take on the device.
  uint64_t cpu_row_bytes = 0, cpu_row_device_bytes = 0;
  int cpu_row_threads = 0;
  double cpu_row_share = 0, cpu_row_pcie_gbs = 0, cpu_row_cpu_gbs = 0;  // the share, and its measured rates (0: given)
  uint64_t kv_bytes = 0;         // K and V rows of every layer and slot
  uint64_t recurrent_bytes = 0;  // DeltaNet conv and recurrent states (hybrid models)
  uint64_t activation_bytes = 0; // activation rows, step inputs, sampling state, attention partials
  uint64_t cublas_bytes = 0;     // the cuBLAS workspace
  uint64_t dequant_bytes = 0;    // f16 dequantization buffer of the largest matrix (per-call products)
  uint64_t graph_bytes = 0;      // CUDA graphs captured so far
  size_t graphs = 0;
  uint64_t device_total = 0, device_free = 0;

  uint64_t scratch_bytes() const { return activation_bytes + cublas_bytes + dequant_bytes; }
  // Everything above that the stage holds on the device.
  uint64_t total() const {
    return weight_bytes + f16_bytes + ring_bytes + expert_slot_bytes + expert_cache_bytes + cpu_row_device_bytes +
           kv_bytes + recurrent_bytes + scratch_bytes() + graph_bytes;
  }
  // A few lines, the first "cuda:N memory (<stage>):", each after it indented; no trailing newline.
  std::string format() const;
};

struct WeightMemory {
  uint64_t quantized = 0;  // matrix storage (as the file stores the blocks, repacked in place) + 1-D as f32
  uint64_t f16 = 0;        // resident f16 copies
  size_t tensors = 0;      // buffers counted (a tied output head shares the embedding's)
};
// The device bytes of the tensors `w` uploaded (streamed matrices live in the ring, not here).
WeightMemory weight_memory(const CudaWeights& w);

}  // namespace pipellm::cuda

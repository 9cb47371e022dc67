// A stage's weights under a VRAM budget (docs/PREFETCH.md): plans which layers stay resident
// (engine/model/vram_plan.h), keeps the streamed layers' matrices in pinned host memory in
// device layout, streams them through a LayerStreamer ring each pass, and points the stage's
// CudaWeights at the staging slots (fixed addresses: graph capture stays valid). Embeddings can
// stay in mapped host memory: the lookup reads only the batch's rows over PCIe.
//
// Use with CudaStage: build CudaWeights from resident_view(), then install() into them; call
// begin_pass / before_layer / after_layer / end_pass around the layers of every forward pass.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/cuda/cuda_weights.h"
#include "engine/cuda/weight_streamer.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"
#include "engine/model/vram_plan.h"

namespace pipellm::cuda {

struct StreamingOptions {
  uint64_t vram_budget = 0;           // 0: everything resident (no streaming)
  bool budget_weights_only = false;   // budget counts weights only; ring and KV come on top
  StreamPlacement placement = StreamPlacement::Interleaved;
  bool embeddings_in_host = true;
  int min_streamed_layers = 0;        // stream at least this many (tests, ablations)
  // Share of each streamed matrix's rows the CPU multiplies in decode (host_rows.h): the images
  // hold only the other rows; 0: none; negative: measured when the stage is built
  // (measure_cpu_rows_share).
  double cpu_rows = 0.0;
  StreamerOptions streamer;
  bool enabled() const { return vram_budget > 0 || min_streamed_layers > 0; }
};

class StreamedWeights {
 public:
  // Plans (throws InvalidArgument with the minimum budget when nothing fits) and builds the pinned
  // host images. `w`'s tensors are read only here. n_slots / n_ctx size the (f16) KV cache.
  // kv_k / kv_v: the stage's KV cache element types (the plan counts their bytes).
  StreamedWeights(const ModelConfig& c, const ModelWeights& w, int n_slots, int n_ctx, const StreamingOptions& opt,
                  TensorType kv_k = TensorType::F16, TensorType kv_v = TensorType::F16);

  const VramPlan& plan() const { return plan_; }
  // `w` without the tensors that must not be uploaded (streamed matrices, host embeddings).
  const ModelWeights& resident_view() const { return view_; }
  // Points the streamed layers' matrices at their staging slots and the embeddings at host memory.
  void install(CudaWeights& cw) const;
  const LayerStreamer* streamer() const { return streamer_.get(); }
  // The rows of streamed matrices left to the CPU (StreamingOptions::cpu_rows): per split matrix
  // its local layer, role, the rows the image keeps (top) and a view of the rest (rows top..n of
  // the file's tensor).
  struct CpuRows {
    int local = 0;
    LayerTensor role = LayerTensor::Count;
    int64_t top = 0;
    TensorView bottom;
  };
  const std::vector<CpuRows>& cpu_rows() const { return cpu_rows_; }
  size_t host_bytes() const { return host_.bytes(); }

  void begin_pass(cudaStream_t s);
  void before_layer(int local_layer, cudaStream_t s);
  void after_layer(int local_layer, cudaStream_t s);
  void end_pass(cudaStream_t s);

 private:
  struct StreamedLayer {
    int local = 0;
    struct Part {
      LayerTensor role;
      DeviceMatrix m;      // data is set at install; n_out: the rows the image holds
      size_t offset;       // inside the layer's image
      int64_t full_rows;   // the tensor's rows (more than m.n_out where the CPU keeps some)
    };
    std::vector<Part> parts;  // the layer's matrices
    size_t host_offset = 0;
    size_t bytes = 0;
  };

  VramPlan plan_;
  ModelWeights view_;
  std::vector<StreamedLayer> layers_;  // schedule order (ascending local layer)
  std::vector<int> position_;          // per local layer: schedule position or -1
  MappedHostBuffer host_;              // streamed images, then the embeddings
  DeviceMatrix embeddings_;            // valid when plan_.embeddings_in_host
  std::unique_ptr<LayerStreamer> streamer_;
  std::vector<CpuRows> cpu_rows_;
};

// The rows of a matrix of n_out rows the GPU keeps when `cpu_share` of them go to the CPU: a
// multiple of 64 (the products' row tiles), at least 64; n_out when nothing is split off.
int64_t gpu_rows_of(int64_t n_out, double cpu_share);

}  // namespace pipellm::cuda

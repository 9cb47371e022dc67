// Rows of streamed layers' matrices multiplied by the CPU in decode (issue 19; docs/PREFETCH.md,
// "Why decode misses 34 tok/s"). With StreamingOptions::cpu_rows > 0 each streamed matrix keeps
// rows [0, top) in its streamed image and leaves rows [top, n) to this class, which holds them as
// the file stores them (huge pages, registered with the driver):
// - decode steps (up to kCpuMaxRows rows): per input (q/k/v together, gate/up together) the stream
//   copies the rows to pinned memory, a host function (a node of the captured graph) has the CPU
//   multiply the bottom rows (kernels/cpu/matmul.h, one 8-bit rounding of the activations as the
//   GPU's mat-vec), and the results land in the outputs' columns [top, n). Meanwhile the copy stream keeps streaming the
//   next layers' top rows: PCIe and host memory both carry weights.
// - larger steps: the bottom rows stream to the device through their own ring (weight_streamer.h),
//   repacked there where the type needs it, and the GPU multiplies them as a second product.
// Attention, norms and the KV cache stay on the GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "engine/cuda/cuda_weights.h"
#include "engine/cuda/host_errors.h"
#include "engine/cuda/registered_host_buffer.h"
#include "engine/cuda/streamed_weights.h"
#include "engine/cuda/weight_streamer.h"
#include "engine/util/thread_pool.h"
#include "kernels/cuda/cuda_raii.h"

namespace pipellm::cuda {

// The share of each streamed matrix's rows the CPU should take so that both links finish a decode
// token together: cpu / (cpu + pcie), from a pinned host-to-device copy (best of 3) and a
// one-token pass over up to 512 MiB of `w`'s matrices on `threads` threads (best of 2), timed here.
// *pcie_gbs / *cpu_gbs (when given) get the rates.
double measure_cpu_rows_share(const ModelWeights& w, int threads, double* pcie_gbs = nullptr, double* cpu_gbs = nullptr);

class HostRows {
 public:
  static constexpr int kCpuMaxRows = 8;  // decode steps (the mat-vec sizes); larger ones upload
  static constexpr int kMaxGroup = 3;    // products of one input (q, k, v) one host function takes

  // Copies the bottom rows `splits` name (views into the file, read only here) with `threads` CPU
  // threads (0: one per hardware thread but one, left to the thread driving the GPU), which then
  // multiply them; steps of up to max_tokens rows.
  HostRows(const std::vector<StreamedWeights::CpuRows>& splits, int max_tokens, int threads, float eps);
  HostRows(const HostRows&) = delete;
  HostRows& operator=(const HostRows&) = delete;

  // Remembers which of the stage's matrices are split (their tops were installed by
  // StreamedWeights), so that enqueue() can find a matrix's bottom by address.
  void bind(const CudaWeights& w);
  // Whether any matrix of layer `l` is the top of a split matrix.
  bool splits_layer(const CudaLayer& l) const;
  // Whether a step of T rows multiplies the bottoms on the CPU (always, where the host copies
  // could not be pinned: no uploads then).
  bool cpu_step(int T) const { return T <= kCpuMaxRows || streamer_ == nullptr; }
  uint64_t host_bytes() const { return host_bytes_; }
  uint64_t device_bytes() const;  // the upload ring, repacked copies and scratch
  int threads() const { return pool_.size(); }

  // One product's output: y[t][top + r] = (or +=, add) the bottom rows' product, y rows y_stride
  // apart.
  struct Output {
    const CudaMatrix* m;  // the top rows the stage holds (split(*m) or not: unsplit ones are skipped)
    float* y;
    int64_t y_stride;
    bool add;
  };
  // The bottom rows of the split matrices among `outs`, all multiplying the same T input rows x
  // ([T][n_in] device floats). A decode step (cpu_step) multiplies on the CPU: one copy of x and
  // one host function for them all; a larger one multiplies each uploaded bottom through
  // `gpu_product` (the stage's own product routine: matrix, output pointer, its Output).
  void enqueue(const std::vector<Output>& outs, int T, const float* x,
               const std::function<void(const CudaMatrix&, float*, const Output&)>& gpu_product, cudaStream_t s);

  // Larger steps: per pass, begin_uploads; before_layer / after_layer around each local layer;
  // end_uploads (weight_streamer.h's ordering; capturable).
  void begin_uploads(cudaStream_t s);
  void before_layer(int local, cudaStream_t s);
  void after_layer(int local, cudaStream_t s);
  void end_uploads(cudaStream_t s);

  // Throws the Error a host function met (its rows came back NaN). After the stream ran the step.
  void rethrow() { errors_.rethrow(); }

 private:
  struct Split {
    int local = 0;
    LayerTensor role = LayerTensor::Count;
    int64_t top = 0;
    TensorView rows;      // the bottom rows in host memory
    CudaMatrix uploaded;  // the same rows in the upload slot (or the repacked copy): larger steps
    uint64_t offset = 0;  // in the layer's host image and upload slot
  };
  struct Layer {
    int local = 0;
    std::unique_ptr<RegisteredHostBuffer> mem;
    std::vector<int> splits;
    int position = 0;  // in the upload schedule
  };
  struct Call {
    HostRows* self;
    std::vector<int> splits;  // their results one after another in h_y_
    int T;
  };
  static void CUDART_CB run_call(void* call);
  void run(const Call& c);

  float eps_;
  ThreadPool pool_;
  std::vector<Split> splits_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::map<int, int> layer_of_local_;  // local layer -> layers_ index
  std::map<const CudaMatrix*, int> index_;
  uint64_t host_bytes_ = 0;
  int64_t max_in_ = 0, max_rows_ = 0;
  PinnedBuffer<float> h_x_, h_y_;
  DeviceBuffer<float> d_y_;
  std::unique_ptr<LayerStreamer> streamer_;  // null when some host copy could not be pinned
  DeviceBuffer<uint8_t> repacked_;
  std::map<std::pair<std::vector<int>, int>, std::unique_ptr<Call>> calls_;  // (splits, T): stable for graphs

  HostErrors errors_;
};

}  // namespace pipellm::cuda

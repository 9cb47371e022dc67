// A stage's weights on one GPU: matrices in their GGUF blocks (device layout of
// kernels/cuda/weight_layout.h), 1-D tensors (norms, biases, rope factors) as f32. Optionally
// every matrix also keeps a resident f16 copy for the tensor-core products (prefill, large
// batches): more memory, no per-call dequantization.
#pragma once
#include <cuda_fp16.h>

#include <array>
#include <cstdint>
#include <vector>

#include "engine/cuda/staged_upload.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/cuda/weight_layout.h"

namespace pipellm::cuda {

// A matrix, or a stack of expert matrices: then m is expert 0 (n_out = one expert's rows) and
// expert e starts expert_bytes after it (each expert repacked on its own, weight_layout.h).
struct CudaMatrix {
  DeviceBuffer<uint8_t> storage;
  DeviceMatrix m;
  size_t expert_bytes = 0;
  DeviceBuffer<__half> f16;  // resident copy, or empty (never for expert stacks)
  bool present() const { return m.data != nullptr; }
};

// A layer's tensors by role (engine/model/layer_tensors.h): matrices, and 1-D tensors as f32.
struct CudaLayer {
  std::array<CudaMatrix, kLayerTensorCount> mats;
  std::array<DeviceBuffer<float>, kLayerTensorCount> vecs;
  CudaMatrix& operator[](LayerTensor r) { return mats[static_cast<size_t>(r)]; }
  const CudaMatrix& operator[](LayerTensor r) const { return mats[static_cast<size_t>(r)]; }
  const float* vec(LayerTensor r) const { return vecs[static_cast<size_t>(r)].get(); }
};

// The device matrix a tensor becomes (data left null): one expert's shape for a stack of n_expert.
// Throws Error naming a tensor whose type the CUDA kernels cannot read, or a stack that does not
// divide into n_expert matrices.
DeviceMatrix device_matrix_shape(const TensorView& t, int64_t n_expert = 1);

class CudaWeights {
 public:
  // Uploads the tensors `w` refers to (host memory, e.g. the GGUF mapping): their bytes as they
  // are through pinned staging buffers (staged_upload.h), repacked on the device (repack.h).
  // Throws Error naming a tensor whose type the CUDA kernels cannot read (before any upload).
  CudaWeights(const ModelConfig& c, const ModelWeights& w, bool resident_f16, cudaStream_t s,
              const StagedUploadOptions& upload = {});

  std::vector<CudaLayer> layers;  // layers[i] is global layer range.first + i
  CudaMatrix token_embd, output;  // either may be absent for a middle stage
  DeviceBuffer<float> output_norm, rope_freqs;
  CudaMatrix per_layer_token_embd, per_layer_model_proj;  // gemma4's per-layer inputs
  DeviceBuffer<float> per_layer_proj_norm;
  size_t device_bytes = 0;
  int64_t max_matrix_elems = 0;  // largest n_in * n_out (scratch for per-call dequantization)
  uint64_t upload_bytes = 0;     // host bytes copied to the device by the constructor
  double upload_seconds = 0;     // the constructor's wall time (allocations and f16 copies included)
};

}  // namespace pipellm::cuda

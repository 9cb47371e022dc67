// A stage's weights on one GPU: matrices in their GGUF blocks (device layout of
// kernels/cuda/weight_layout.h), 1-D tensors (norms, biases, rope factors) as f32. Optionally
// every matrix also keeps a resident f16 copy for the tensor-core products (prefill, large
// batches): more memory, no per-call dequantization.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>
#include <vector>

#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/cuda/weight_layout.h"

namespace pipellm::cuda {

struct CudaMatrix {
  DeviceBuffer<uint8_t> storage;
  DeviceMatrix m;
  DeviceBuffer<__half> f16;  // resident copy, or empty
  bool present() const { return m.data != nullptr; }
};

struct CudaLayer {
  CudaMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
  DeviceBuffer<float> attn_norm, ffn_norm, bq, bk, bv, q_norm, k_norm;
};

class CudaWeights {
 public:
  // Uploads the tensors `w` refers to (host memory, e.g. the GGUF mapping). Throws Error naming
  // a tensor whose type the CUDA kernels cannot read.
  CudaWeights(const ModelConfig& c, const ModelWeights& w, bool resident_f16, cudaStream_t s);

  std::vector<CudaLayer> layers;  // layers[i] is global layer range.first + i
  CudaMatrix token_embd, output;  // either may be absent for a middle stage
  DeviceBuffer<float> output_norm, rope_freqs;
  size_t device_bytes = 0;
  int64_t max_matrix_elems = 0;  // largest n_in * n_out (scratch for per-call dequantization)
};

}  // namespace pipellm::cuda

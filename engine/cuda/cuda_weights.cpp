#include "engine/cuda/cuda_weights.h"

#include <algorithm>
#include <string>

#include "base/error.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/embedding.h"

namespace pipellm::cuda {
namespace {

// n_expert > 1: t is a stack [n_in, rows, n_expert] uploaded as n_expert matrices of `rows`.
void upload_matrix(const TensorView* t, bool resident_f16, cudaStream_t s, CudaMatrix& out, size_t& bytes,
                   int64_t& max_elems, int64_t n_expert = 1) {
  if (t == nullptr) return;
  if (!cuda_supports(t->type))
    throw Error("CUDA: tensor '" + t->name + "' has type " + tensor_type_name(t->type) + ", which the CUDA kernels cannot read");
  DeviceMatrix m;
  m.type = t->type;
  m.n_in = t->ne[0];
  m.n_out = t->n_rows() / n_expert;
  const int64_t nb = m.blocks();
  out.expert_bytes = t->nbytes / static_cast<uint64_t>(n_expert);
  std::vector<uint8_t> host(t->nbytes);
  for (int64_t e = 0; e < n_expert; ++e) {
    repack_for_device(t->type, t->data + e * out.expert_bytes, nb, host.data() + e * out.expert_bytes);
  }
  out.storage.resize(t->nbytes);
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.storage.get(), host.data(), t->nbytes, cudaMemcpyHostToDevice, s));
  PIPELLM_CUDA_CHECK(cudaStreamSynchronize(s));  // `host` is released below
  m.data = out.storage.get();
  out.m = m;
  bytes += t->nbytes;
  if (n_expert > 1) return;  // expert products read the blocks (moe.h): no f16 copy, no scratch
  max_elems = std::max(max_elems, m.n_in * m.n_out);
  if (resident_f16) {
    out.f16.resize(static_cast<size_t>(m.n_in * m.n_out));
    dequantize_f16(m, out.f16.get(), s);
    bytes += out.f16.bytes();
  }
}

void upload_vector(const TensorView* t, cudaStream_t s, DeviceBuffer<float>& out) {
  if (t == nullptr) return;
  const int64_t n = t->n_elements();
  std::vector<float> host(static_cast<size_t>(n));
  dequantize_row(t->type, t->data, host.data(), n);
  out.resize(static_cast<size_t>(n));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.get(), host.data(), n * sizeof(float), cudaMemcpyHostToDevice, s));
  PIPELLM_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace

CudaWeights::CudaWeights(const ModelConfig& c, const ModelWeights& w, bool resident_f16, cudaStream_t s) {
  layers.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& lw = w.layers[i];
    const LayerSpec& spec = c.layer(w.range.first + static_cast<int>(i));
    CudaLayer& l = layers[i];
    for (LayerTensor r : all_layer_tensors()) {
      if (is_matrix(r)) {
        const int64_t experts = is_expert_stack(r) ? spec.n_expert : 1;
        upload_matrix(lw[r], resident_f16, s, l[r], device_bytes, max_matrix_elems, experts);
      } else {
        upload_vector(lw[r], s, l.vecs[static_cast<size_t>(r)]);
      }
    }
  }
  // The embedding is only looked up row by row: no f16 copy.
  upload_matrix(w.token_embd, false, s, token_embd, device_bytes, max_matrix_elems);
  if (w.output != nullptr) {
    if (w.output == w.token_embd && !resident_f16) {
      output.m = token_embd.m;  // tied: share the storage
    } else {
      upload_matrix(w.output, resident_f16, s, output, device_bytes, max_matrix_elems);
    }
    max_matrix_elems = std::max(max_matrix_elems, output.m.n_in * output.m.n_out);
  }
  upload_vector(w.output_norm, s, output_norm);
  upload_matrix(w.per_layer_token_embd, false, s, per_layer_token_embd, device_bytes, max_matrix_elems);
  upload_matrix(w.per_layer_model_proj, resident_f16, s, per_layer_model_proj, device_bytes, max_matrix_elems);
  upload_vector(w.per_layer_proj_norm, s, per_layer_proj_norm);
  upload_vector(w.rope_freqs, s, rope_freqs);
  PIPELLM_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace pipellm::cuda

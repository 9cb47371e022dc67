#include "engine/cuda/cuda_weights.h"

#include <algorithm>
#include <string>

#include "engine/util/error.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/embedding.h"

namespace pipellm::cuda {
namespace {

void upload_matrix(const TensorView* t, bool resident_f16, cudaStream_t s, CudaMatrix& out, size_t& bytes,
                   int64_t& max_elems) {
  if (t == nullptr) return;
  if (!cuda_supports(t->type))
    throw Error("CUDA: tensor '" + t->name + "' has type " + tensor_type_name(t->type) + ", which the CUDA kernels cannot read");
  DeviceMatrix m;
  m.type = t->type;
  m.n_in = t->ne[0];
  m.n_out = t->n_rows();
  const int64_t nb = m.blocks();
  std::vector<uint8_t> host(t->nbytes);
  repack_for_device(t->type, t->data, nb, host.data());
  out.storage.resize(t->nbytes);
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.storage.get(), host.data(), t->nbytes, cudaMemcpyHostToDevice, s));
  PIPELLM_CUDA_CHECK(cudaStreamSynchronize(s));  // `host` is released below
  m.data = out.storage.get();
  out.m = m;
  bytes += t->nbytes;
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
  (void)c;
  layers.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& lw = w.layers[i];
    CudaLayer& l = layers[i];
    upload_matrix(lw.wq, resident_f16, s, l.wq, device_bytes, max_matrix_elems);
    upload_matrix(lw.wk, resident_f16, s, l.wk, device_bytes, max_matrix_elems);
    upload_matrix(lw.wv, resident_f16, s, l.wv, device_bytes, max_matrix_elems);
    upload_matrix(lw.wo, resident_f16, s, l.wo, device_bytes, max_matrix_elems);
    upload_matrix(lw.w_gate, resident_f16, s, l.w_gate, device_bytes, max_matrix_elems);
    upload_matrix(lw.w_up, resident_f16, s, l.w_up, device_bytes, max_matrix_elems);
    upload_matrix(lw.w_down, resident_f16, s, l.w_down, device_bytes, max_matrix_elems);
    upload_vector(lw.attn_norm, s, l.attn_norm);
    upload_vector(lw.ffn_norm, s, l.ffn_norm);
    upload_vector(lw.bq, s, l.bq);
    upload_vector(lw.bk, s, l.bk);
    upload_vector(lw.bv, s, l.bv);
    upload_vector(lw.q_norm, s, l.q_norm);
    upload_vector(lw.k_norm, s, l.k_norm);
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
  upload_vector(w.rope_freqs, s, rope_freqs);
  PIPELLM_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace pipellm::cuda

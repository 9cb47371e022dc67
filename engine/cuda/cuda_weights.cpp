#include "engine/cuda/cuda_weights.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>

#include "base/error.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/repack.h"

namespace pipellm::cuda {
namespace {

// n_expert > 1: t is a stack [n_in, rows, n_expert] uploaded as n_expert matrices of `rows`.
struct MatrixJob {
  const TensorView* t;
  CudaMatrix* out;
  bool resident_f16;
  int64_t n_expert;
};

struct VectorJob {
  const TensorView* t;
  DeviceBuffer<float>* out;
};

}  // namespace

DeviceMatrix device_matrix_shape(const TensorView& t, int64_t n_expert) {
  if (!cuda_supports(t.type))
    throw Error("CUDA: tensor '" + t.name + "' has type " + tensor_type_name(t.type) + ", which the CUDA kernels cannot read");
  if (n_expert < 1 || t.n_rows() % n_expert != 0)
    throw Error("CUDA: tensor '" + t.name + "' " + t.shape_string() + " is not a stack of " + std::to_string(n_expert) +
                " expert matrices");
  DeviceMatrix m;
  m.type = t.type;
  m.n_in = t.ne[0];
  m.n_out = t.n_rows() / n_expert;
  return m;
}

CudaWeights::CudaWeights(const ModelConfig& c, const ModelWeights& w, bool resident_f16, cudaStream_t s,
                         const StagedUploadOptions& upload) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<MatrixJob> mats;
  std::vector<VectorJob> vecs;
  const auto add_matrix = [&](const TensorView* t, CudaMatrix& out, bool f16, int64_t n_expert) {
    if (t != nullptr) mats.push_back({t, &out, f16, n_expert});
  };
  const auto add_vector = [&](const TensorView* t, DeviceBuffer<float>& out) {
    if (t != nullptr) vecs.push_back({t, &out});
  };
  layers.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& lw = w.layers[i];
    const LayerSpec& spec = c.layer(w.range.first + static_cast<int>(i));
    CudaLayer& l = layers[i];
    for (LayerTensor r : all_layer_tensors()) {
      if (is_matrix(r)) {
        add_matrix(lw[r], l[r], resident_f16, is_expert_stack(r) ? spec.n_expert : 1);
      } else {
        add_vector(lw[r], l.vecs[static_cast<size_t>(r)]);
      }
    }
  }
  // The embedding is only looked up row by row: no f16 copy.
  add_matrix(w.token_embd, token_embd, false, 1);
  const bool tied = w.output != nullptr && w.output == w.token_embd && !resident_f16;  // then share the storage
  if (!tied) add_matrix(w.output, output, resident_f16, 1);
  add_vector(w.output_norm, output_norm);
  add_matrix(w.per_layer_token_embd, per_layer_token_embd, false, 1);
  add_matrix(w.per_layer_model_proj, per_layer_model_proj, resident_f16, 1);
  add_vector(w.per_layer_proj_norm, per_layer_proj_norm);
  add_vector(w.rope_freqs, rope_freqs);

  // Every type is checked before anything is allocated or copied.
  std::vector<DeviceMatrix> shapes;
  size_t scratch_bytes = 0;
  for (const MatrixJob& j : mats) {
    shapes.push_back(device_matrix_shape(*j.t, j.n_expert));
    upload_bytes += j.t->nbytes;
    if (is_repacked(j.t->type)) scratch_bytes = std::max<size_t>(scratch_bytes, j.t->nbytes);
  }
  // 1-D tensors become f32 on the host (small), then travel with the matrices.
  std::vector<std::vector<float>> host_vecs;
  for (const VectorJob& j : vecs) {
    const int64_t n = j.t->n_elements();
    host_vecs.emplace_back(static_cast<size_t>(n));
    dequantize_row(j.t->type, j.t->data, host_vecs.back().data(), n);
    upload_bytes += static_cast<uint64_t>(n) * sizeof(float);
  }

  // Repacked types land in the scratch buffer as raw blocks and are repacked into their final
  // buffer by a kernel that follows the copy in stream order (so one scratch buffer serves all).
  DeviceBuffer<uint8_t> scratch(scratch_bytes);
  StagedUploader up(upload_bytes, s, upload);  // declared after `scratch`: waits for the stream before it goes
  for (size_t k = 0; k < mats.size(); ++k) {
    const TensorView& t = *mats[k].t;
    CudaMatrix& out = *mats[k].out;
    const int64_t n_expert = mats[k].n_expert;
    DeviceMatrix m = shapes[k];
    out.expert_bytes = t.nbytes / static_cast<uint64_t>(n_expert);
    out.storage.resize(t.nbytes);
    m.data = out.storage.get();
    out.m = m;
    device_bytes += t.nbytes;
    // Expert products read the blocks (moe.h): no f16 copy, no dequantization scratch.
    const bool f16 = mats[k].resident_f16 && n_expert == 1;
    if (n_expert == 1) max_matrix_elems = std::max(max_matrix_elems, m.n_in * m.n_out);
    if (f16) {
      out.f16.resize(static_cast<size_t>(m.n_in * m.n_out));
      device_bytes += out.f16.bytes();
    }
    const bool repack = is_repacked(t.type);
    std::function<void()> then;
    if (repack || f16) {
      then = [&out, m, repack, f16, n_expert, raw = scratch.get(), s] {
        if (repack) repack_for_device(m.type, raw, m.blocks(), out.storage.get(), s, n_expert);
        if (f16) dequantize_f16(m, out.f16.get(), s);
      };
    }
    up.copy(t.data, t.nbytes, repack ? scratch.get() : out.storage.get(), std::move(then));
  }
  for (size_t k = 0; k < vecs.size(); ++k) {
    DeviceBuffer<float>& out = *vecs[k].out;
    out.resize(host_vecs[k].size());
    up.copy(reinterpret_cast<const uint8_t*>(host_vecs[k].data()), out.bytes(), reinterpret_cast<uint8_t*>(out.get()));
  }
  up.finish();
  if (w.output != nullptr) {
    if (tied) output.m = token_embd.m;
    max_matrix_elems = std::max(max_matrix_elems, output.m.n_in * output.m.n_out);
  }
  upload_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace pipellm::cuda

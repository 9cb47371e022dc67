#include "engine/cuda/host_experts.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "base/error.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/repack.h"
#include "kernels/cuda/weight_layout.h"

namespace pipellm::cuda {

namespace {

constexpr LayerTensor kStacks[] = {LayerTensor::GateExps, LayerTensor::UpExps, LayerTensor::GateUpExps,
                                   LayerTensor::DownExps};

bool marked(const std::vector<bool>& host, size_t i) { return i < host.size() && host[i]; }

}  // namespace

ModelWeights without_host_experts(const ModelWeights& w, const std::vector<bool>& host) {
  ModelWeights out = w;
  for (size_t i = 0; i < out.layers.size(); ++i) {
    if (!marked(host, i)) continue;
    for (LayerTensor r : kStacks) out.layers[i][r] = nullptr;
  }
  return out;
}

uint64_t host_expert_bytes(const ModelWeights& w, const std::vector<bool>& host) {
  uint64_t bytes = 0;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    if (!marked(host, i)) continue;
    for (LayerTensor r : kStacks) {
      if (const TensorView* t = w.layers[i][r]) bytes += t->nbytes;
    }
  }
  return bytes;
}

uint64_t upload_slot_bytes(const ModelWeights& w, const std::vector<bool>& host, uint64_t* repack_bytes) {
  uint64_t slot = 0, raw = 0;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    if (!marked(host, i)) continue;
    uint64_t bytes = 0;
    for (LayerTensor r : kStacks) {
      const TensorView* t = w.layers[i][r];
      if (t == nullptr) continue;
      bytes += (t->nbytes + 255) / 256 * 256;
      if (is_repacked(t->type)) raw = std::max<uint64_t>(raw, t->nbytes);
    }
    slot = std::max(slot, bytes);
  }
  if (repack_bytes != nullptr) *repack_bytes = raw;
  return slot;
}

HostExperts::HostExperts(const ModelConfig& c, const ModelWeights& w, const std::vector<bool>& host, int max_tokens,
                         int threads)
    : n_embd_(c.n_embd), pool_(threads) {
  layers_.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    if (!marked(host, i)) continue;
    const int il = w.range.first + static_cast<int>(i);
    const LayerSpec& s = c.layer(il);
    if (s.ffn != FfnKind::Moe) continue;
    const LayerWeights& lw = w.layers[i];
    auto l = std::make_unique<Layer>();
    // Own copies of the stacks (the mapping is only read while the stage is built), copied by
    // every thread: one thread alone reads the page cache at a fraction of memory bandwidth.
    const auto copy = [&](LayerTensor r, TensorView& view) -> const TensorView* {
      const TensorView* t = lw[r];
      if (t == nullptr) return nullptr;
      view = *t;
      l->bytes.emplace_back();
      HostBytes& hb = l->bytes.back();
      if (pinned_) {
        try {
          hb.pinned = PinnedBuffer<uint8_t>(t->nbytes);
        } catch (const Error&) {
          (void)cudaGetLastError();  // an allocation failure is not sticky: plain memory, CPU products only
          pinned_ = false;
        }
      }
      if (hb.pinned.get() == nullptr) hb.plain.reset(new uint8_t[t->nbytes]);
      uint8_t* dst = hb.get();
      pool_.parallel_for(static_cast<int64_t>(t->nbytes), [&](int64_t b, int64_t e) {
        std::memcpy(dst + b, t->data + b, static_cast<size_t>(e - b));
      });
      view.data = dst;
      bytes_ += t->nbytes;
      return &view;
    };
    const auto floats = [&](LayerTensor r, std::vector<float>& out) -> const float* {
      const TensorView* t = lw[r];
      if (t == nullptr) return nullptr;
      out.resize(static_cast<size_t>(t->n_elements()));
      dequantize_row(t->type, t->data, out.data(), t->n_elements());
      return out.data();
    };
    ExpertStacks& st = l->stacks;
    st.gate = copy(LayerTensor::GateExps, l->gate);
    st.up = copy(LayerTensor::UpExps, l->up);
    st.gate_up = copy(LayerTensor::GateUpExps, l->gate_up);
    st.down = copy(LayerTensor::DownExps, l->down);
    st.gate_bias = floats(LayerTensor::GateExpsBias, l->gate_bias);
    st.up_bias = floats(LayerTensor::UpExpsBias, l->up_bias);
    st.down_bias = floats(LayerTensor::DownExpsBias, l->down_bias);
    st.act = s.act;
    st.n_embd = c.n_embd;
    st.n_ff = s.n_ff;
    st.n_expert = s.n_expert;
    if (st.down == nullptr || (st.gate_up == nullptr && (st.gate == nullptr || st.up == nullptr))) {
      throw Error("host experts: layer " + std::to_string(il) + " has no complete expert stacks");
    }
    l->k = s.n_expert_used;
    k_ = std::max(k_, s.n_expert_used);
    layers_[i] = std::move(l);
  }
  if (pinned_ && max_tokens >= kUploadMinRows) {
    uint64_t raw = 0;
    slot_.resize(upload_slot_bytes(w, host, &raw));
    raw_.resize(raw);
  } else {
    pinned_ = false;  // no step is large enough to upload
  }
  const size_t T = static_cast<size_t>(max_tokens), E = static_cast<size_t>(n_embd_), P = T * static_cast<size_t>(k_);
  h_rows_ = PinnedBuffer<float>(T * E);
  h_out_ = PinnedBuffer<float>(T * E);
  h_weights_ = PinnedBuffer<float>(P);
  h_ids_ = PinnedBuffer<int32_t>(P);
  h_pos_ = PinnedBuffer<int32_t>(T);
}

void HostExperts::enqueue(int local_layer, int T, const float* rows, const int32_t* ids, const float* weights,
                          const int32_t* pos, float* out, cudaStream_t s) {
  if (!holds(local_layer)) throw Error("host experts: local layer " + std::to_string(local_layer) + " is on the GPU");
  if (T < 1 || static_cast<size_t>(T) > h_pos_.size()) throw Error("host experts: " + std::to_string(T) + " rows");
  const int K = layers_[static_cast<size_t>(local_layer)]->k;
  const size_t rows_bytes = static_cast<size_t>(T) * static_cast<size_t>(n_embd_) * sizeof(float);
  const size_t pairs = static_cast<size_t>(T) * static_cast<size_t>(K);
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_rows_.get(), rows, rows_bytes, cudaMemcpyDeviceToHost, s));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_ids_.get(), ids, pairs * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_weights_.get(), weights, pairs * sizeof(float), cudaMemcpyDeviceToHost, s));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_pos_.get(), pos, static_cast<size_t>(T) * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  std::unique_ptr<Call>& call = calls_[{local_layer, T}];
  if (!call) call.reset(new Call{this, local_layer, T});
  PIPELLM_CUDA_CHECK(cudaLaunchHostFunc(s, &HostExperts::run_call, call.get()));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out, h_out_.get(), rows_bytes, cudaMemcpyHostToDevice, s));
}

const CudaLayer& HostExperts::upload(int local_layer, cudaStream_t s) {
  if (!holds(local_layer) || !pinned_) throw Error("host experts: local layer " + std::to_string(local_layer) + " cannot upload");
  const Layer& l = *layers_[static_cast<size_t>(local_layer)];
  uint64_t off = 0;
  const std::pair<LayerTensor, const TensorView*> stacks[] = {{LayerTensor::GateExps, &l.gate},
                                                              {LayerTensor::UpExps, &l.up},
                                                              {LayerTensor::GateUpExps, &l.gate_up},
                                                              {LayerTensor::DownExps, &l.down}};
  for (const auto& [role, t] : stacks) {
    CudaMatrix& m = staged_[role];
    m.m = DeviceMatrix{};
    if (t->data == nullptr) continue;
    const int64_t n_expert = l.stacks.n_expert;
    m.m = device_matrix_shape(*t, n_expert);
    m.m.data = slot_.get() + off;
    m.expert_bytes = t->nbytes / static_cast<uint64_t>(n_expert);
    if (is_repacked(t->type)) {
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(raw_.get(), t->data, t->nbytes, cudaMemcpyHostToDevice, s));
      repack_for_device(t->type, raw_.get(), m.m.blocks(), slot_.get() + off, s, n_expert);
    } else {
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(slot_.get() + off, t->data, t->nbytes, cudaMemcpyHostToDevice, s));
    }
    off += (t->nbytes + 255) / 256 * 256;
  }
  return staged_;
}

void CUDART_CB HostExperts::run_call(void* call) {
  const Call& c = *static_cast<const Call*>(call);
  c.self->run(c.layer, c.T);
}

void HostExperts::run(int layer, int T) {
  const Layer& l = *layers_[static_cast<size_t>(layer)];
  try {
    const size_t K = static_cast<size_t>(l.k);
    for (size_t t = 0; t < static_cast<size_t>(T); ++t) {
      if (h_pos_[t] < 0) std::fill(h_ids_.get() + t * K, h_ids_.get() + (t + 1) * K, -1);
    }
    // One 8-bit rounding of the activations, as the GPU's expert kernels and llama.cpp.
    experts_.run(l.stacks, h_rows_.get(), h_ids_.get(), h_weights_.get(), T, l.k, h_out_.get(), pool_, 1);
  } catch (const std::exception& e) {
    std::fill(h_out_.get(), h_out_.get() + static_cast<size_t>(T) * static_cast<size_t>(n_embd_),
              std::numeric_limits<float>::quiet_NaN());
    const std::lock_guard<std::mutex> lock(error_mutex_);
    if (error_.empty()) error_ = "host experts, local layer " + std::to_string(layer) + ": " + e.what();
  }
}

void HostExperts::rethrow() {
  std::string e;
  {
    const std::lock_guard<std::mutex> lock(error_mutex_);
    e.swap(error_);
  }
  if (!e.empty()) throw Error(e);
}

}  // namespace pipellm::cuda

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

uint64_t aligned(uint64_t n) { return (n + 255) / 256 * 256; }

// A host layer's image (its stacks one after another, 256-byte aligned) and the part of it whose
// types are repacked on the device.
struct ImageSize {
  uint64_t image = 0, repacked = 0;
};

ImageSize image_size(const LayerWeights& lw) {
  ImageSize s;
  for (LayerTensor r : kStacks) {
    if (const TensorView* t = lw[r]) {
      s.image += aligned(t->nbytes);
      if (is_repacked(t->type)) s.repacked += aligned(t->nbytes);
    }
  }
  return s;
}

}  // namespace

ModelWeights without_host_experts(const ModelWeights& w, const std::vector<bool>& host) {
  ModelWeights out = w;
  for (size_t i = 0; i < out.layers.size(); ++i) {
    if (!marked(host, i)) continue;
    for (LayerTensor r : kStacks) out.layers[i][r] = nullptr;
  }
  return out;
}

uint64_t expert_stack_bytes(const LayerWeights& l) {
  uint64_t bytes = 0;
  for (LayerTensor r : kStacks) {
    if (const TensorView* t = l[r]) bytes += t->nbytes;
  }
  return bytes;
}

uint64_t host_expert_bytes(const ModelWeights& w, const std::vector<bool>& host) {
  uint64_t bytes = 0;
  for (size_t i = 0; i < w.layers.size(); ++i) bytes += marked(host, i) ? expert_stack_bytes(w.layers[i]) : 0;
  return bytes;
}

uint64_t upload_device_bytes(const ModelWeights& w, const std::vector<bool>& host) {
  uint64_t slot = 0, repacked = 0;
  int n = 0;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    if (!marked(host, i)) continue;
    const ImageSize s = image_size(w.layers[i]);
    if (s.image == 0) continue;
    slot = std::max(slot, s.image);
    repacked = std::max(repacked, s.repacked);
    ++n;
  }
  return static_cast<uint64_t>(std::min(n, HostExperts::kUploadSlots)) * slot + repacked;
}

HostExperts::HostExperts(const ModelConfig& c, const ModelWeights& w, const std::vector<bool>& host, int max_tokens,
                         int threads, uint64_t cache_bytes, int cache_refresh)
    : n_embd_(c.n_embd), pool_(ThreadPool::threads_beside_one(threads)) {
  layers_.resize(w.layers.size());
  bool pinned = max_tokens >= kUploadMinRows;  // no step large enough to upload: plain memory
  std::vector<LayerImage> schedule;
  uint64_t repacked = 0;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    if (!marked(host, i)) continue;
    const int il = w.range.first + static_cast<int>(i);
    const LayerSpec& s = c.layer(il);
    if (s.ffn != FfnKind::Moe) continue;
    const LayerWeights& lw = w.layers[i];
    auto l = std::make_unique<Layer>();
    const ImageSize size = image_size(lw);
    l->image_bytes = size.image;
    repacked = std::max(repacked, size.repacked);
    l->buffer = std::make_unique<RegisteredHostBuffer>(size.image, pinned);
    pinned = pinned && l->buffer->pinned();  // refused: CPU products only
    uint8_t* image = l->buffer->get();
    // Copied by every thread: one thread alone reads the page cache at a fraction of memory
    // bandwidth. The mapping is only read while the stage is built.
    uint64_t off = 0;
    const auto copy = [&](LayerTensor r, TensorView& view) -> const TensorView* {
      const TensorView* t = lw[r];
      if (t == nullptr) return nullptr;
      view = *t;
      uint8_t* dst = image + off;
      pool_.parallel_for(static_cast<int64_t>(t->nbytes), [&](int64_t b, int64_t e) {
        std::memcpy(dst + b, t->data + b, static_cast<size_t>(e - b));
      });
      view.data = dst;
      off += aligned(t->nbytes);
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
    l->position = static_cast<int>(schedule.size());
    k_ = std::max(k_, s.n_expert_used);
    schedule.push_back({image, l->image_bytes});
    layers_[i] = std::move(l);
  }
  if (pinned && !schedule.empty()) {
    StreamerOptions so;
    so.slots = kUploadSlots;
    streamer_ = std::make_unique<LayerStreamer>(std::move(schedule), so);
    repacked_.resize(repacked);
  }
  const size_t T = static_cast<size_t>(max_tokens), E = static_cast<size_t>(n_embd_), P = T * static_cast<size_t>(k_);
  h_rows_ = PinnedBuffer<float>(T * E);
  h_out_ = PinnedBuffer<float>(T * E);
  h_weights_ = PinnedBuffer<float>(P);
  h_ids_ = PinnedBuffer<int32_t>(P);
  h_host_ids_ = PinnedBuffer<int32_t>(P);
  h_pos_ = PinnedBuffer<int32_t>(T);
  if (cache_bytes > 0) {
    std::vector<ExpertCache::Layer> cl(layers_.size());
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer* l = layers_[i].get();
      if (l == nullptr) continue;
      cl[i].n_expert = static_cast<int>(l->stacks.n_expert);
      const std::pair<LayerTensor, const TensorView*> stacks[] = {{LayerTensor::GateExps, &l->gate},
                                                                  {LayerTensor::UpExps, &l->up},
                                                                  {LayerTensor::GateUpExps, &l->gate_up},
                                                                  {LayerTensor::DownExps, &l->down}};
      for (const auto& [role, t] : stacks) {
        if (t->data == nullptr) continue;
        cl[i].stacks.push_back({role, device_matrix_shape(*t, l->stacks.n_expert),
                                t->nbytes / static_cast<uint64_t>(l->stacks.n_expert), t->data});
      }
    }
    cache_ = std::make_unique<ExpertCache>(std::move(cl), cache_bytes, cache_refresh);
  }
}

uint64_t HostExperts::device_bytes() const {
  return streamer_ ? static_cast<uint64_t>(streamer_->slots()) * streamer_->slot_bytes() + repacked_.bytes() : 0;
}

const HostExperts::Layer& HostExperts::layer(int local_layer) const {
  if (!holds(local_layer)) throw Error("host experts: local layer " + std::to_string(local_layer) + " is on the GPU");
  return *layers_[static_cast<size_t>(local_layer)];
}

void HostExperts::enqueue(int local_layer, int T, const float* rows, const int32_t* ids, const int32_t* host_ids,
                          const float* weights, const int32_t* pos, float* out, cudaStream_t s) {
  const Layer& l = layer(local_layer);
  if (T < 1 || static_cast<size_t>(T) > h_pos_.size()) throw Error("host experts: " + std::to_string(T) + " rows");
  const size_t rows_bytes = static_cast<size_t>(T) * static_cast<size_t>(n_embd_) * sizeof(float);
  const size_t pairs = static_cast<size_t>(T) * static_cast<size_t>(l.k);
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_rows_.get(), rows, rows_bytes, cudaMemcpyDeviceToHost, s));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_ids_.get(), ids, pairs * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_host_ids_.get(), host_ids != nullptr ? host_ids : ids, pairs * sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, s));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_weights_.get(), weights, pairs * sizeof(float), cudaMemcpyDeviceToHost, s));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_pos_.get(), pos, static_cast<size_t>(T) * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  std::unique_ptr<Call>& call = calls_[{local_layer, T}];
  if (!call) call.reset(new Call{this, local_layer, T});
  PIPELLM_CUDA_CHECK(cudaLaunchHostFunc(s, &HostExperts::run_call, call.get()));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out, h_out_.get(), rows_bytes, cudaMemcpyHostToDevice, s));
}

const CudaLayer& HostExperts::upload(int local_layer, cudaStream_t s) {
  const Layer& l = layer(local_layer);
  if (!streamer_) throw Error("host experts: uploads need pinned host copies");
  streamer_->before(l.position, s);
  const uint8_t* slot = streamer_->slot_data(l.position);
  uint64_t off = 0, repacked = 0;
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
    m.expert_bytes = t->nbytes / static_cast<uint64_t>(n_expert);
    if (is_repacked(t->type)) {
      // The slot holds the file's blocks; the kernels read the device layout.
      uint8_t* dst = repacked_.get() + repacked;
      repack_for_device(t->type, slot + off, m.m.blocks(), dst, s, n_expert);
      m.m.data = dst;
      repacked += aligned(t->nbytes);
    } else {
      m.m.data = const_cast<uint8_t*>(slot + off);
    }
    off += aligned(t->nbytes);
  }
  return staged_;
}

void HostExperts::release(int local_layer, cudaStream_t s) { streamer_->after(layer(local_layer).position, s); }

void CUDART_CB HostExperts::run_call(void* call) {
  const Call& c = *static_cast<const Call*>(call);
  c.self->run(c.layer, c.T);
}

void HostExperts::run(int layer, int T) {
  const Layer& l = *layers_[static_cast<size_t>(layer)];
  try {
    const size_t K = static_cast<size_t>(l.k);
    for (size_t t = 0; t < static_cast<size_t>(T); ++t) {
      if (h_pos_[t] >= 0) continue;
      std::fill(h_ids_.get() + t * K, h_ids_.get() + (t + 1) * K, -1);
      std::fill(h_host_ids_.get() + t * K, h_host_ids_.get() + (t + 1) * K, -1);
    }
    if (cache_) cache_->record(layer, h_ids_.get(), h_host_ids_.get(), T * l.k);
    // One 8-bit rounding of the activations, as the GPU's expert kernels and llama.cpp.
    experts_.run(l.stacks, h_rows_.get(), h_host_ids_.get(), h_weights_.get(), T, l.k, h_out_.get(), pool_, 1);
  } catch (const std::exception& e) {
    std::fill(h_out_.get(), h_out_.get() + static_cast<size_t>(T) * static_cast<size_t>(n_embd_),
              std::numeric_limits<float>::quiet_NaN());
    errors_.record("host experts, local layer " + std::to_string(layer) + ": " + e.what());
  }
}


}  // namespace pipellm::cuda

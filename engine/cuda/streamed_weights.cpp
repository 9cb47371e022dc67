#include "engine/cuda/streamed_weights.h"

#include <algorithm>
#include <string>
#include <exception>
#include <mutex>
#include <thread>

#include "base/error.h"

namespace pipellm::cuda {
namespace {

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

DeviceMatrix shape_of(const TensorView& t) {
  if (!cuda_supports(t.type))
    throw Error("CUDA: tensor '" + t.name + "' has type " + tensor_type_name(t.type) +
                ", which the CUDA kernels cannot read");
  DeviceMatrix m;
  m.type = t.type;
  m.n_in = t.ne[0];
  m.n_out = t.n_rows();
  return m;
}

// Runs f(i) for i in [0, n) on a few threads (repacking gigabytes single-threaded is slow).
template <class F>
void parallel_for(int n, F f) {
  const int nt = std::max(1, std::min(n, static_cast<int>(std::min(8u, std::thread::hardware_concurrency()))));
  std::vector<std::thread> th;
  std::exception_ptr err;
  std::mutex mu;
  for (int k = 0; k < nt; ++k) {
    th.emplace_back([&, k] {
      try {
        for (int i = k; i < n; i += nt) f(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!err) err = std::current_exception();
      }
    });
  }
  for (auto& t : th) t.join();
  if (err) std::rethrow_exception(err);
}

}  // namespace

StreamedWeights::StreamedWeights(const ModelConfig& c, const ModelWeights& w, int n_slots, int n_ctx,
                                 const StreamingOptions& opt, TensorType kv_k, TensorType kv_v)
    : view_(w) {
  VramPlanInput in = vram_plan_input(c, w, n_slots, n_ctx, opt.vram_budget, 512, kv_k, kv_v);
  in.slots = std::max(2, opt.streamer.slots);
  in.placement = opt.placement;
  in.embeddings_in_host = opt.embeddings_in_host;
  in.min_streamed = opt.min_streamed_layers;
  if (opt.budget_weights_only && in.budget > 0) {
    uint64_t largest = 0;
    for (uint64_t b : in.layer_bytes) largest = std::max(largest, b);
    in.budget += in.kv_bytes + static_cast<uint64_t>(in.slots) * largest;
  }
  plan_ = plan_vram(in);

  // Host images: each streamed layer's matrices at kStreamAlign-aligned offsets, then embeddings.
  const int n_local = static_cast<int>(w.layers.size());
  position_.assign(static_cast<size_t>(n_local), -1);
  size_t host_bytes = 0;
  for (int i = 0; i < n_local; ++i) {
    if (!plan_.streamed[static_cast<size_t>(i)]) continue;
    const LayerWeights& lw = w.layers[static_cast<size_t>(i)];
    StreamedLayer sl;
    sl.local = i;
    sl.host_offset = host_bytes;
    for (LayerTensor r : all_layer_tensors()) {
      const TensorView* t = lw[r];
      if (t == nullptr || !is_matrix(r)) continue;
      if (is_expert_stack(r)) {
        throw Error("weight streaming: layer " + std::to_string(w.range.first + i) +
                    " has experts, which cannot be streamed yet (give the stage more VRAM or more ranks)");
      }
      DeviceMatrix m = shape_of(*t);
      const int64_t full_rows = m.n_out, top = gpu_rows_of(m.n_out, opt.cpu_rows);
      if (top < m.n_out) {
        // Rows top.. go to the CPU in decode (host_rows.h); the image keeps rows 0..top.
        CpuRows cr;
        cr.local = i;
        cr.role = r;
        cr.top = top;
        cr.bottom = *t;
        cr.bottom.ne[1] = m.n_out - top;
        cr.bottom.nbytes = static_cast<uint64_t>(m.n_out - top) * t->row_bytes();
        cr.bottom.data = t->data + static_cast<size_t>(top) * t->row_bytes();
        cpu_rows_.push_back(cr);
        m.n_out = top;
      }
      sl.parts.push_back({r, m, sl.bytes, full_rows});
      sl.bytes += align_up(m.bytes(), kStreamAlign);
    }
    host_bytes += sl.bytes;
    position_[static_cast<size_t>(i)] = static_cast<int>(layers_.size());
    layers_.push_back(sl);
    LayerWeights& vw = view_.layers[static_cast<size_t>(i)];
    for (const auto& part : sl.parts) vw[part.role] = nullptr;
  }
  const size_t emb_offset = host_bytes;
  if (plan_.embeddings_in_host) {
    host_bytes += align_up(w.token_embd->nbytes, kStreamAlign);
    embeddings_ = shape_of(*w.token_embd);
    view_.token_embd = nullptr;
  }
  if (host_bytes == 0) return;

  host_ = MappedHostBuffer(host_bytes);
  parallel_for(static_cast<int>(layers_.size()), [&](int p) {
    const StreamedLayer& sl = layers_[static_cast<size_t>(p)];
    const LayerWeights& lw = w.layers[static_cast<size_t>(sl.local)];
    for (const auto& part : sl.parts) {
      const TensorView* t = lw[part.role];  // its first part.m.n_out rows
      repack_for_device(t->type, t->data, part.m.blocks(), host_.host() + sl.host_offset + part.offset);
    }
  });
  if (plan_.embeddings_in_host) {
    repack_for_device(embeddings_.type, w.token_embd->data, embeddings_.blocks(), host_.host() + emb_offset);
    embeddings_.data = host_.device() + emb_offset;
  }
  std::vector<LayerImage> schedule;
  for (const StreamedLayer& sl : layers_) schedule.push_back({host_.host() + sl.host_offset, sl.bytes});
  if (!schedule.empty()) {
    StreamerOptions so = opt.streamer;
    so.slots = plan_.slots;
    so.depth = std::min(so.depth, so.slots);
    streamer_ = std::make_unique<LayerStreamer>(std::move(schedule), so);
  }
}

int64_t gpu_rows_of(int64_t n_out, double cpu_share) {
  if (!(cpu_share > 0.0)) return n_out;
  const int64_t keep = static_cast<int64_t>(static_cast<double>(n_out) * (1.0 - std::min(cpu_share, 1.0))) / 64 * 64;
  return std::max<int64_t>(64, keep) >= n_out ? n_out : std::max<int64_t>(64, keep);
}

void StreamedWeights::install(CudaWeights& cw) const {
  for (size_t p = 0; p < layers_.size(); ++p) {
    const StreamedLayer& sl = layers_[p];
    CudaLayer& l = cw.layers.at(static_cast<size_t>(sl.local));
    uint8_t* base = streamer_->slot_data(static_cast<int>(p));
    for (const auto& part : sl.parts) {
      CudaMatrix& m = l[part.role];
      m.m = part.m;
      m.m.data = base + part.offset;
      // The dequantization buffer also takes the CPU's rows when a larger step uploads them.
      cw.max_matrix_elems = std::max(cw.max_matrix_elems, m.m.n_in * part.full_rows);
    }
  }
  if (plan_.embeddings_in_host) cw.token_embd.m = embeddings_;
}

void StreamedWeights::begin_pass(cudaStream_t s) {
  if (streamer_) streamer_->begin_pass(s);
}

void StreamedWeights::before_layer(int local_layer, cudaStream_t s) {
  const int p = position_.at(static_cast<size_t>(local_layer));
  if (p >= 0) streamer_->before(p, s);
}

void StreamedWeights::after_layer(int local_layer, cudaStream_t s) {
  const int p = position_.at(static_cast<size_t>(local_layer));
  if (p >= 0) streamer_->after(p, s);
}

void StreamedWeights::end_pass(cudaStream_t s) {
  if (streamer_) streamer_->end_pass(s);
}

}  // namespace pipellm::cuda

#include "engine/cuda/host_rows.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>

#include "base/error.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cuda/layer_ops.h"
#include "kernels/cuda/repack.h"
#include "kernels/cuda/weight_layout.h"

namespace pipellm::cuda {

namespace {
uint64_t aligned(uint64_t n) { return (n + 255) / 256 * 256; }
}  // namespace

double measure_cpu_rows_share(const ModelWeights& w, int threads, double* pcie_gbs, double* cpu_gbs) {
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  // PCIe: 64 MiB from pinned memory.
  constexpr size_t kCopy = size_t{64} << 20;
  PinnedBuffer<uint8_t> host(kCopy);
  DeviceBuffer<uint8_t> dev(kCopy);
  std::memset(host.get(), 1, kCopy);
  double best_copy = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    PIPELLM_CUDA_CHECK(cudaMemcpy(dev.get(), host.get(), kCopy, cudaMemcpyHostToDevice));
    best_copy = std::min(best_copy, seconds(t0));
  }
  const double pcie = static_cast<double>(kCopy) / best_copy / 1e9;
  // The CPU: one token through the layers' matrices, 512 MiB of them or all (more than a last-level
  // cache holds, as a decode token's streamed rows are).
  std::vector<const TensorView*> mats;
  uint64_t bytes = 0;
  for (const LayerWeights& l : w.layers) {
    for (LayerTensor r : all_layer_tensors()) {
      const TensorView* t = l[r];
      if (t == nullptr || !is_matrix(r) || is_expert_stack(r) || bytes >= (uint64_t{512} << 20)) continue;
      mats.push_back(t);
      bytes += t->nbytes;
    }
  }
  double cpu = 0.0;
  if (!mats.empty()) {
    ThreadPool pool(ThreadPool::threads_beside_one(threads));  // as HostRows will run
    int64_t widest = 0, tallest = 0;
    for (const TensorView* t : mats) {
      widest = std::max(widest, t->ne[0]);
      tallest = std::max(tallest, t->n_rows());
    }
    std::vector<float> x(static_cast<size_t>(widest), 0.5f), y(static_cast<size_t>(tallest));
    double best = 1e30;
    for (int r = 0; r < 2; ++r) {
      const auto t0 = Clock::now();
      for (const TensorView* t : mats) {
        MatmulArgs a;
        a.type = t->type;
        a.w = t->data;
        a.row_bytes = t->row_bytes();
        a.n_rows = t->n_rows();
        a.n = t->ne[0];
        a.x = x.data();
        a.x_stride = a.n;
        a.y = y.data();
        a.y_stride = a.n_rows;
        a.act_parts = 1;
        pool.run([&](int ith, int nth) { matmul(a, ith, nth); });
      }
      best = std::min(best, seconds(t0));
    }
    cpu = static_cast<double>(bytes) / best / 1e9;
  }
  if (pcie_gbs != nullptr) *pcie_gbs = pcie;
  if (cpu_gbs != nullptr) *cpu_gbs = cpu;
  return std::min(0.9, cpu / (cpu + pcie));
}

HostRows::HostRows(const std::vector<StreamedWeights::CpuRows>& splits, int max_tokens, int threads, float eps)
    : eps_(eps), pool_(ThreadPool::threads_beside_one(threads)) {
  // One host image per layer: its bottoms one after another (256-byte aligned offsets).
  for (const auto& cr : splits) {
    auto it = layer_of_local_.find(cr.local);
    if (it == layer_of_local_.end()) {
      it = layer_of_local_.emplace(cr.local, static_cast<int>(layers_.size())).first;
      layers_.push_back(std::make_unique<Layer>());
      layers_.back()->local = cr.local;
    }
    Split sp;
    sp.local = cr.local;
    sp.role = cr.role;
    sp.top = cr.top;
    sp.rows = cr.bottom;
    Layer& l = *layers_[static_cast<size_t>(it->second)];
    sp.offset = 0;
    for (int k : l.splits) sp.offset += aligned(splits_[static_cast<size_t>(k)].rows.nbytes);
    l.splits.push_back(static_cast<int>(splits_.size()));
    splits_.push_back(std::move(sp));
    max_in_ = std::max(max_in_, cr.bottom.ne[0]);
    max_rows_ = std::max(max_rows_, cr.bottom.ne[1]);
  }
  bool pinned = true;
  std::vector<LayerImage> schedule;
  uint64_t repacked = 0;
  for (auto& lp : layers_) {
    Layer& l = *lp;
    uint64_t bytes = 0, rep = 0;
    for (int k : l.splits) {
      const TensorView& t = splits_[static_cast<size_t>(k)].rows;
      bytes += aligned(t.nbytes);
      if (is_repacked(t.type)) rep += aligned(t.nbytes);
    }
    repacked = std::max(repacked, rep);
    l.mem = std::make_unique<RegisteredHostBuffer>(bytes, pinned);
    pinned = pinned && l.mem->pinned();  // refused: the bottoms stay on the CPU for every step
    for (int k : l.splits) {
      Split& sp = splits_[static_cast<size_t>(k)];
      uint8_t* dst = l.mem->get() + sp.offset;
      const uint8_t* src = sp.rows.data;
      pool_.parallel_for(static_cast<int64_t>(sp.rows.nbytes), [&](int64_t b, int64_t e) {
        std::memcpy(dst + b, src + b, static_cast<size_t>(e - b));
      });
      sp.rows.data = dst;
      host_bytes_ += sp.rows.nbytes;
    }
    l.position = static_cast<int>(schedule.size());
    schedule.push_back({l.mem->get(), bytes});
  }
  if (pinned && !schedule.empty()) {
    streamer_ = std::make_unique<LayerStreamer>(std::move(schedule), StreamerOptions{});
    repacked_.resize(repacked);
    // Where each bottom sits while its layer computes: in the slot, or (repacked types) in the
    // device-layout copy made from it. Fixed addresses: captured graphs stay valid.
    for (auto& lp : layers_) {
      uint64_t rep = 0;
      for (int k : lp->splits) {
        Split& sp = splits_[static_cast<size_t>(k)];
        sp.uploaded.m = device_matrix_shape(sp.rows);
        if (is_repacked(sp.rows.type)) {
          sp.uploaded.m.data = repacked_.get() + rep;
          rep += aligned(sp.rows.nbytes);
        } else {
          sp.uploaded.m.data = streamer_->slot_data(lp->position) + sp.offset;
        }
      }
    }
  }
  // The CPU takes decode steps only, unless nothing could be pinned (then every step).
  const int64_t T = std::max<int64_t>(1, streamer_ ? std::min(max_tokens, kCpuMaxRows) : max_tokens);
  h_x_ = PinnedBuffer<float>(static_cast<size_t>(T * max_in_));
  h_y_ = PinnedBuffer<float>(static_cast<size_t>(T * max_rows_ * kMaxGroup));
  d_y_.resize(static_cast<size_t>(T * max_rows_));
}

void HostRows::bind(const CudaWeights& w) {
  index_.clear();
  for (size_t k = 0; k < splits_.size(); ++k) {
    const Split& sp = splits_[k];
    index_[&w.layers.at(static_cast<size_t>(sp.local))[sp.role]] = static_cast<int>(k);
  }
}

bool HostRows::splits_layer(const CudaLayer& l) const {
  for (const CudaMatrix& m : l.mats) {
    if (index_.count(&m) > 0) return true;
  }
  return false;
}

uint64_t HostRows::device_bytes() const {
  const uint64_t ring = streamer_ ? static_cast<uint64_t>(streamer_->slots()) * streamer_->slot_bytes() : 0;
  return ring + repacked_.bytes() + d_y_.bytes();
}

void HostRows::enqueue(const std::vector<Output>& outs, int T, const float* x,
                       const std::function<void(const CudaMatrix&, float*, const Output&)>& gpu_product,
                       cudaStream_t s) {
  std::vector<int> splits;
  std::vector<const Output*> split_outs;
  for (const Output& o : outs) {
    const auto it = index_.find(o.m);
    if (it == index_.end()) continue;
    splits.push_back(it->second);
    split_outs.push_back(&o);
  }
  if (splits.empty()) return;
  if (!cpu_step(T)) {
    for (size_t k = 0; k < splits.size(); ++k) {
      const Split& sp = splits_[static_cast<size_t>(splits[k])];
      gpu_product(sp.uploaded, split_outs[k]->y + sp.top, *split_outs[k]);
    }
    return;
  }
  if (static_cast<int>(splits.size()) > kMaxGroup) {
    throw Error("host rows: a group of " + std::to_string(splits.size()) + " products");
  }
  const int64_t n_in = splits_[static_cast<size_t>(splits.front())].rows.ne[0];
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_x_.get(), x, static_cast<size_t>(T * n_in) * sizeof(float),
                                     cudaMemcpyDeviceToHost, s));
  std::unique_ptr<Call>& call = calls_[{splits, T}];
  if (!call) call.reset(new Call{this, splits, T});
  PIPELLM_CUDA_CHECK(cudaLaunchHostFunc(s, &HostRows::run_call, call.get()));
  size_t off = 0;  // floats into h_y_
  for (size_t k = 0; k < splits.size(); ++k) {
    const Split& sp = splits_[static_cast<size_t>(splits[k])];
    const Output& o = *split_outs[k];
    const int64_t rows = sp.rows.ne[1];
    const size_t row_bytes = static_cast<size_t>(rows) * sizeof(float);
    float* out = o.y + sp.top;
    if (o.add) {
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(d_y_.get(), h_y_.get() + off, static_cast<size_t>(T) * row_bytes,
                                         cudaMemcpyHostToDevice, s));
      residual_add(out, o.y_stride, d_y_.get(), rows, nullptr, nullptr, eps_, T, rows, Launch(s));
    } else {
      PIPELLM_CUDA_CHECK(cudaMemcpy2DAsync(out, static_cast<size_t>(o.y_stride) * sizeof(float), h_y_.get() + off,
                                           row_bytes, row_bytes, static_cast<size_t>(T), cudaMemcpyHostToDevice, s));
    }
    off += static_cast<size_t>(T * rows);
  }
}

void CUDART_CB HostRows::run_call(void* call) {
  const Call& c = *static_cast<const Call*>(call);
  c.self->run(c);
}

void HostRows::run(const Call& c) {
  const int T = c.T;
  size_t off = 0;
  try {
    for (int k : c.splits) {
      const Split& sp = splits_[static_cast<size_t>(k)];
      MatmulArgs a;
      a.type = sp.rows.type;
      a.w = sp.rows.data;
      a.row_bytes = sp.rows.row_bytes();
      a.n_rows = sp.rows.ne[1];
      a.n = sp.rows.ne[0];
      a.x = h_x_.get();
      a.x_stride = a.n;
      a.n_tokens = T;
      a.y = h_y_.get() + off;
      a.y_stride = a.n_rows;
      a.act_parts = 1;  // one 8-bit rounding, as the GPU's mat-vec on the top rows
      pool_.run([&](int ith, int nth) { matmul(a, ith, nth); });
      off += static_cast<size_t>(T * a.n_rows);
    }
  } catch (const std::exception& e) {
    std::fill(h_y_.get(), h_y_.get() + h_y_.size(), std::numeric_limits<float>::quiet_NaN());
    errors_.record("host rows: " + std::string(e.what()));
  }
}

void HostRows::begin_uploads(cudaStream_t s) {
  if (streamer_) streamer_->begin_pass(s);
}

void HostRows::before_layer(int local, cudaStream_t s) {
  const auto it = layer_of_local_.find(local);
  if (!streamer_ || it == layer_of_local_.end()) return;
  const Layer& l = *layers_[static_cast<size_t>(it->second)];
  streamer_->before(l.position, s);
  const uint8_t* slot = streamer_->slot_data(l.position);
  for (int k : l.splits) {
    const Split& sp = splits_[static_cast<size_t>(k)];
    if (is_repacked(sp.rows.type)) {
      repack_for_device(sp.rows.type, slot + sp.offset, sp.uploaded.m.blocks(),
                        const_cast<uint8_t*>(sp.uploaded.m.data), s, 1);
    }
  }
}

void HostRows::after_layer(int local, cudaStream_t s) {
  const auto it = layer_of_local_.find(local);
  if (streamer_ && it != layer_of_local_.end()) streamer_->after(layers_[static_cast<size_t>(it->second)]->position, s);
}

void HostRows::end_uploads(cudaStream_t s) {
  if (streamer_) streamer_->end_pass(s);
}


}  // namespace pipellm::cuda

#include "engine/cuda/expert_cache.h"

#include <algorithm>
#include <tuple>

#include "base/error.h"
#include "kernels/cuda/repack.h"

namespace pipellm::cuda {

namespace {

uint64_t aligned(uint64_t n) { return (n + 255) / 256 * 256; }

// Bytes moved into the cache per refresh at most (a bounded pause between two steps: 256 MiB is
// about 5 ms over PCIe).
constexpr uint64_t kMaxRefreshBytes = uint64_t{256} << 20;

}  // namespace

ExpertCache::ExpertCache(std::vector<Layer> layers, uint64_t bytes, int refresh_steps)
    : layers_(std::move(layers)), refresh_steps_(std::max(1, refresh_steps)) {
  uint64_t raw = 0;
  for (const Layer& l : layers_) {
    for (const Stack& st : l.stacks) {
      auto it = std::find(roles_.begin(), roles_.end(), st.role);
      if (it == roles_.end()) {
        roles_.push_back(st.role);
        stride_.push_back(0);
        it = roles_.end() - 1;
      }
      uint64_t& stride = stride_[static_cast<size_t>(it - roles_.begin())];
      stride = std::max(stride, aligned(st.expert_bytes));
      if (is_repacked(st.shape.type)) raw = std::max(raw, st.expert_bytes);
    }
  }
  uint64_t per_slot = 0;
  for (uint64_t s : stride_) per_slot += s;
  n_slots_ = per_slot == 0 ? 0 : static_cast<int>(std::min<uint64_t>(bytes / per_slot, 1u << 20));
  if (n_slots_ < 2) n_slots_ = 0;  // slot 0 holds no expert (below): one slot caches nothing
  for (size_t r = 0; r < roles_.size(); ++r) {
    pools_.emplace_back(static_cast<size_t>(n_slots_) * stride_[r]);
    // Slot 0 stays zeros: every uncached pair multiplies it (weighted 0), and zero blocks decode
    // to finite values in every type, where another layer's expert of another type might not.
    if (n_slots_ > 0) PIPELLM_CUDA_CHECK(cudaMemset(pools_.back().get(), 0, pools_.back().bytes()));
  }
  if (n_slots_ > 0) raw_.resize(raw);
  owner_.assign(static_cast<size_t>(n_slots_), Owner{});  // owner_[0] stays empty
  for (const Layer& l : layers_) {
    const size_t X = l.stacks.empty() ? 0 : static_cast<size_t>(l.n_expert);
    tables_.emplace_back(X);
    slot_of_.emplace_back(X, -1);
    score_.emplace_back(X, 0.0f);
    recent_.emplace_back(X, 0u);
    if (X > 0) {
      PIPELLM_CUDA_CHECK(cudaMemcpy(tables_.back().get(), slot_of_.back().data(), X * sizeof(int32_t),
                                    cudaMemcpyHostToDevice));
    }
  }
}

uint64_t ExpertCache::device_bytes() const {
  uint64_t b = raw_.bytes();
  for (const auto& p : pools_) b += p.bytes();
  for (const auto& t : tables_) b += t.bytes();
  return b;
}

const CudaLayer& ExpertCache::matrices(int local_layer) {
  for (size_t r = 0; r < roles_.size(); ++r) staged_[roles_[r]].m = DeviceMatrix{};
  for (const Stack& st : layers_.at(static_cast<size_t>(local_layer)).stacks) {
    const size_t r = static_cast<size_t>(std::find(roles_.begin(), roles_.end(), st.role) - roles_.begin());
    CudaMatrix& m = staged_[st.role];
    m.m = st.shape;
    m.m.data = pools_[r].get();
    m.expert_bytes = stride_[r];
  }
  return staged_;
}

void ExpertCache::record(int local_layer, const int32_t* ids, const int32_t* host_ids, int n_pairs) {
  const std::lock_guard<std::mutex> lock(mutex_);
  std::vector<uint32_t>& recent = recent_[static_cast<size_t>(local_layer)];
  for (int p = 0; p < n_pairs; ++p) {
    if (ids[p] < 0 || ids[p] >= static_cast<int32_t>(recent.size())) continue;
    ++recent[static_cast<size_t>(ids[p])];
    ++pairs_;
    if (host_ids[p] < 0) ++hits_;
  }
}

uint64_t ExpertCache::hits() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return hits_;
}

uint64_t ExpertCache::pairs() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return pairs_;
}

int ExpertCache::cached() const {
  return static_cast<int>(std::count_if(owner_.begin(), owner_.end(), [](const Owner& o) { return o.layer >= 0; }));
}

void ExpertCache::fill(int slot, Owner o, cudaStream_t s) {
  Owner& prev = owner_[static_cast<size_t>(slot)];
  if (prev.layer >= 0) slot_of_[static_cast<size_t>(prev.layer)][static_cast<size_t>(prev.expert)] = -1;
  prev = o;
  slot_of_[static_cast<size_t>(o.layer)][static_cast<size_t>(o.expert)] = slot;
  for (const Stack& st : layers_[static_cast<size_t>(o.layer)].stacks) {
    const size_t r = static_cast<size_t>(std::find(roles_.begin(), roles_.end(), st.role) - roles_.begin());
    uint8_t* dst = pools_[r].get() + static_cast<size_t>(slot) * stride_[r];
    const uint8_t* src = st.host + static_cast<size_t>(o.expert) * st.expert_bytes;
    if (is_repacked(st.shape.type)) {
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(raw_.get(), src, st.expert_bytes, cudaMemcpyHostToDevice, s));
      repack_for_device(st.shape.type, raw_.get(), st.shape.blocks(), dst, s, 1);
    } else {
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(dst, src, st.expert_bytes, cudaMemcpyHostToDevice, s));
    }
  }
}

void ExpertCache::maintain(cudaStream_t s) {
  if (n_slots_ == 0 || ++steps_ % refresh_steps_ != 0) return;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (size_t l = 0; l < score_.size(); ++l) {
      for (size_t e = 0; e < score_[l].size(); ++e) {
        score_[l][e] = 0.5f * score_[l][e] + static_cast<float>(recent_[l][e]);
        recent_[l][e] = 0;
      }
    }
  }
  // The experts that deserve a slot: the highest scores (ties: lower layer, lower id).
  std::vector<std::tuple<float, int, int>> by_score;
  for (size_t l = 0; l < score_.size(); ++l) {
    for (size_t e = 0; e < score_[l].size(); ++e) {
      if (score_[l][e] > 0.0f) by_score.emplace_back(-score_[l][e], static_cast<int>(l), static_cast<int>(e));
    }
  }
  const size_t keep = std::min(by_score.size(), static_cast<size_t>(n_slots_ - 1));
  std::partial_sort(by_score.begin(), by_score.begin() + static_cast<std::ptrdiff_t>(keep), by_score.end());
  std::vector<std::vector<char>> wanted(score_.size());
  for (size_t l = 0; l < score_.size(); ++l) wanted[l].assign(score_[l].size(), 0);
  for (size_t i = 0; i < keep; ++i) wanted[static_cast<size_t>(std::get<1>(by_score[i]))][static_cast<size_t>(std::get<2>(by_score[i]))] = 1;
  // Free slots: empty ones first, then those of unwanted experts, least used first.
  std::vector<std::pair<float, int>> free_slots;
  for (int k = 1; k < n_slots_; ++k) {
    const Owner& o = owner_[static_cast<size_t>(k)];
    if (o.layer < 0) {
      free_slots.emplace_back(-1.0f, k);
    } else if (!wanted[static_cast<size_t>(o.layer)][static_cast<size_t>(o.expert)]) {
      free_slots.emplace_back(score_[static_cast<size_t>(o.layer)][static_cast<size_t>(o.expert)], k);
    }
  }
  std::sort(free_slots.begin(), free_slots.end());
  std::vector<char> changed(score_.size(), 0);
  uint64_t moved = 0;
  size_t next = 0;
  for (size_t i = 0; i < keep && next < free_slots.size() && moved < kMaxRefreshBytes; ++i) {
    const int l = std::get<1>(by_score[i]), e = std::get<2>(by_score[i]);
    if (slot_of_[static_cast<size_t>(l)][static_cast<size_t>(e)] >= 0) continue;  // already in
    const int slot = free_slots[next++].second;
    const Owner prev = owner_[static_cast<size_t>(slot)];
    if (prev.layer >= 0) changed[static_cast<size_t>(prev.layer)] = 1;
    fill(slot, Owner{l, e}, s);
    changed[static_cast<size_t>(l)] = 1;
    for (const Stack& st : layers_[static_cast<size_t>(l)].stacks) moved += st.expert_bytes;
  }
  for (size_t l = 0; l < changed.size(); ++l) {
    if (!changed[l]) continue;
    // Pageable source: the copy is staged before cudaMemcpyAsync returns, so the mirror may change after.
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(tables_[l].get(), slot_of_[l].data(), slot_of_[l].size() * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, s));
  }
}

}  // namespace pipellm::cuda

#include "engine/model/kv_cache.h"

#include <cstring>

#include "engine/util/error.h"
#include "kernels/cpu/fp16.h"

namespace pipellm {

KvCache::KvCache(const ModelConfig& c, LayerRange range, int n_slots, int n_ctx, int max_step, TensorType type)
    : range_(range), n_slots_(n_slots), n_ctx_(n_ctx), type_(type) {
  if (type != TensorType::F16 && type != TensorType::F32) {
    throw InvalidArgument(std::string("kv cache: type must be f16 or f32, not ") + tensor_type_name(type));
  }
  if (n_slots <= 0 || n_ctx <= 0) {
    throw InvalidArgument("kv cache: need at least one slot and one position (slots " + std::to_string(n_slots) +
                          ", ctx " + std::to_string(n_ctx) + ")");
  }
  const size_t elem = type == TensorType::F16 ? 2 : 4;
  for (int l = range.first; l < range.last; ++l) {
    k_dim_.push_back(c.k_dim(l));
    v_dim_.push_back(c.v_dim(l));
    k_row_bytes_.push_back(elem * static_cast<size_t>(k_dim_.back()));
    v_row_bytes_.push_back(elem * static_cast<size_t>(v_dim_.back()));
    rows_.push_back(c.kv_rows(l, n_ctx, max_step));
    const size_t rows = static_cast<size_t>(n_slots) * static_cast<size_t>(rows_.back());
    k_.emplace_back(rows * k_row_bytes_.back());
    v_.emplace_back(rows * v_row_bytes_.back());
  }
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (size_t l = 0; l < k_.size(); ++l) total += k_[l].size() + v_[l].size();
  return total;
}

void KvCache::store(uint8_t* row, const float* src, int n) const {
  if (type_ == TensorType::F32) {
    std::memcpy(row, src, static_cast<size_t>(n) * 4);
    return;
  }
  auto* h = reinterpret_cast<uint16_t*>(row);
  for (int i = 0; i < n; ++i) h[i] = f32_to_fp16(src[i]);
}

void KvCache::store_k(int layer, int slot, int pos, const float* src) {
  store(k(layer, slot) + static_cast<size_t>(pos % rows(layer)) * k_row_bytes(layer), src, k_dim_[local(layer)]);
}

void KvCache::store_v(int layer, int slot, int pos, const float* src) {
  store(v(layer, slot) + static_cast<size_t>(pos % rows(layer)) * v_row_bytes(layer), src, v_dim_[local(layer)]);
}

}  // namespace pipellm

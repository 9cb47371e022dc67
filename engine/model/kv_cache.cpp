#include "engine/model/kv_cache.h"

#include <cstring>
#include <string>

#include "base/error.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/kv_quant.h"

namespace pipellm {

bool is_kv_cache_type(TensorType type) {
  return type == TensorType::F16 || type == TensorType::F32 || type == TensorType::Q8_0 || type == TensorType::Q4_0;
}

size_t kv_row_bytes(TensorType type, int64_t n) {
  if (!is_kv_cache_type(type)) {
    throw InvalidArgument(std::string("kv cache: type must be f16, f32, q8_0 or q4_0, not ") + tensor_type_name(type));
  }
  const int64_t block = tensor_type_info(type).block_size;
  if (n % block != 0) {
    throw InvalidArgument("kv cache: a row of " + std::to_string(n) + " values is not a whole number of " +
                          tensor_type_name(type) + " blocks of " + std::to_string(block));
  }
  return tensor_row_bytes(type, n);
}

void check_kv_head_dim(TensorType type, int head_dim, const std::string& what) {
  if (!is_kv_cache_type(type)) {
    throw InvalidArgument(what + ": KV cache type must be f16, f32, q8_0 or q4_0, not " + tensor_type_name(type));
  }
  const int64_t block = tensor_type_info(type).block_size;
  if (head_dim % block != 0) {
    throw InvalidArgument(what + ": a " + tensor_type_name(type) + " KV cache needs head sizes that are multiples of " +
                          std::to_string(block) + ", this one is " + std::to_string(head_dim) +
                          " (use f16 for this model)");
  }
}

KvCache::KvCache(const ModelConfig& c, LayerRange range, int n_slots, int n_ctx, int max_step, TensorType k_type,
                 TensorType v_type)
    : range_(range), n_slots_(n_slots), n_ctx_(n_ctx), k_type_(k_type), v_type_(v_type) {
  if (n_slots <= 0 || n_ctx <= 0) {
    throw InvalidArgument("kv cache: need at least one slot and one position (slots " + std::to_string(n_slots) +
                          ", ctx " + std::to_string(n_ctx) + ")");
  }
  for (int l = range.first; l < range.last; ++l) {
    rows_.push_back(c.kv_rows(l, n_ctx, max_step));
    if (rows_.back() > 0) {  // a layer with a cache of its own: its heads must be whole blocks
      const std::string what = "kv cache, layer " + std::to_string(l);
      check_kv_head_dim(k_type, c.layer(l).head_dim, what + " K");
      check_kv_head_dim(v_type, c.layer(l).head_dim_v, what + " V");
    }
    k_dim_.push_back(c.k_dim(l));
    v_dim_.push_back(c.v_dim(l));
    // Layers without rows (recurrent, KV-sharing) keep no storage whatever their head sizes.
    k_row_bytes_.push_back(rows_.back() > 0 ? kv_row_bytes(k_type, k_dim_.back()) : 0);
    v_row_bytes_.push_back(rows_.back() > 0 ? kv_row_bytes(v_type, v_dim_.back()) : 0);
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

void kv_store_row(TensorType type, const float* src, int64_t n, uint8_t* row) {
  switch (type) {
    case TensorType::F32: std::memcpy(row, src, static_cast<size_t>(n) * 4); return;
    case TensorType::F16: {
      auto* h = reinterpret_cast<uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_fp16(src[i]);
      return;
    }
    case TensorType::Q8_0: kvq::quantize_q8_0(src, reinterpret_cast<BlockQ8_0*>(row), n / kQK); return;
    case TensorType::Q4_0: kvq::quantize_q4_0(src, reinterpret_cast<BlockQ4_0*>(row), n / kQK); return;
    default: break;
  }
  throw Error(std::string("kv cache: no store for type ") + tensor_type_name(type));
}

void KvCache::store_k(int layer, int slot, int pos, const float* src) {
  kv_store_row(k_type_, src, k_dim_[local(layer)],
               k(layer, slot) + static_cast<size_t>(pos % rows(layer)) * k_row_bytes(layer));
}

void KvCache::store_v(int layer, int slot, int pos, const float* src) {
  kv_store_row(v_type_, src, v_dim_[local(layer)],
               v(layer, slot) + static_cast<size_t>(pos % rows(layer)) * v_row_bytes(layer));
}

}  // namespace pipellm

// Key/value cache of one stage: for each of its layers and each sequence slot, n_ctx rows.
//
// Layout (mirrored by the CUDA engine): one buffer per local layer,
//   K: [n_slots][n_ctx][n_head_kv * head_dim]     V: [n_slots][n_ctx][n_head_kv * head_dim_v]
// row-major, elements f16 (default) or f32. Row p of slot s holds the token at position p of
// the sequence in slot s, after RoPE (K). Heads are contiguous inside a row (head h at h*head_dim).
// A sequence's cache is valid for positions [0, n) once tokens 0..n-1 have gone through forward;
// reusing a slot just overwrites it from position 0. A sliding-window layer keeps fewer rows
// (ModelConfig::kv_rows): a ring where position p lives in row p % rows(layer).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"
#include "kernels/cpu/tensor_type.h"

namespace pipellm {

class KvCache {
 public:
  // type: TensorType::F16 or TensorType::F32.
  // max_step: the most tokens one forward step stores (sizes the sliding-window rings).
  KvCache(const ModelConfig& c, LayerRange range, int n_slots, int n_ctx, int max_step,
          TensorType type = TensorType::F16);

  LayerRange range() const { return range_; }
  int n_slots() const { return n_slots_; }
  int n_ctx() const { return n_ctx_; }
  TensorType type() const { return type_; }
  size_t k_row_bytes(int layer) const { return k_row_bytes_[local(layer)]; }
  size_t v_row_bytes(int layer) const { return v_row_bytes_[local(layer)]; }
  size_t bytes() const;
  int rows(int layer) const { return rows_[local(layer)]; }  // per slot

  // First row (position 0) of a slot's K or V for a global layer index.
  uint8_t* k(int layer, int slot) { return k_[local(layer)].data() + row_offset(layer, slot, k_row_bytes(layer)); }
  uint8_t* v(int layer, int slot) { return v_[local(layer)].data() + row_offset(layer, slot, v_row_bytes(layer)); }

  // Stores n floats at row `pos` of a slot, converting to the cache type.
  void store_k(int layer, int slot, int pos, const float* src);
  void store_v(int layer, int slot, int pos, const float* src);

 private:
  size_t local(int layer) const { return static_cast<size_t>(layer - range_.first); }
  size_t row_offset(int layer, int slot, size_t row_bytes) const {
    return static_cast<size_t>(slot) * static_cast<size_t>(rows(layer)) * row_bytes;
  }
  void store(uint8_t* row, const float* src, int n) const;

  LayerRange range_;
  int n_slots_;
  int n_ctx_;
  TensorType type_;
  std::vector<int> k_dim_, v_dim_;              // per local layer
  std::vector<size_t> k_row_bytes_, v_row_bytes_;
  std::vector<int> rows_;  // per local layer
  std::vector<std::vector<uint8_t>> k_, v_;
};

}  // namespace pipellm

// Key/value cache of one stage: for each of its layers and each sequence slot, n_ctx rows.
//
// Layout (mirrored by the CUDA engine): one buffer per local layer,
//   K: [n_slots][n_ctx][n_head_kv * head_dim]     V: [n_slots][n_ctx][n_head_kv * head_dim_v]
// row-major. Row p of slot s holds the token at position p of the sequence in slot s, after
// RoPE (K). Heads are contiguous inside a row (head h at h*head_dim).
// A sequence's cache is valid for positions [0, n) once tokens 0..n-1 have gone through forward;
// reusing a slot just overwrites it from position 0. A sliding-window layer keeps fewer rows
// (ModelConfig::kv_rows): a ring where position p lives in row p % rows(layer).
//
// Element types, chosen separately for K and V (llama.cpp's --cache-type-k / --cache-type-v):
// F16 (default), F32, or the 32-value blocks Q8_0 / Q4_0 (kernels/cpu/block_formats.h), written
// at store time as llama.cpp's ggml_cpy writes them (kernels/cpu/kv_quant.h). A quantized row
// is the row's blocks in order; with head_dim a multiple of 32 (required) each head is a whole
// number of blocks, at byte h * head_dim / 32 * block_bytes of the row.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/tensor_type.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"

namespace pipellm {

// F16, F32, Q8_0 or Q4_0.
bool is_kv_cache_type(TensorType type);
// Bytes of one cache row of n values. Throws InvalidArgument for a type that is not a cache
// type, or for n not a multiple of the type's block.
size_t kv_row_bytes(TensorType type, int64_t n);
// Throws InvalidArgument (naming `what`, the layer and the type) unless `type` is a cache type
// whose blocks tile heads of head_dim values (quantized types need a multiple of 32).
void check_kv_head_dim(TensorType type, int head_dim, const std::string& what);

class KvCache {
 public:
  // max_step: the most tokens one forward step stores (sizes the sliding-window rings).
  KvCache(const ModelConfig& c, LayerRange range, int n_slots, int n_ctx, int max_step, TensorType k_type,
          TensorType v_type);
  // K and V of one type (F16 or F32 historically; any cache type).
  KvCache(const ModelConfig& c, LayerRange range, int n_slots, int n_ctx, int max_step,
          TensorType type = TensorType::F16)
      : KvCache(c, range, n_slots, n_ctx, max_step, type, type) {}

  LayerRange range() const { return range_; }
  int n_slots() const { return n_slots_; }
  int n_ctx() const { return n_ctx_; }
  TensorType k_type() const { return k_type_; }
  TensorType v_type() const { return v_type_; }
  TensorType type() const { return k_type_; }  // K's type (the same as V's unless they were set apart)
  size_t k_row_bytes(int layer) const { return k_row_bytes_[local(layer)]; }
  size_t v_row_bytes(int layer) const { return v_row_bytes_[local(layer)]; }
  size_t bytes() const;
  int rows(int layer) const { return rows_[local(layer)]; }  // per slot

  // First row (position 0) of a slot's K or V for a global layer index.
  uint8_t* k(int layer, int slot) { return k_[local(layer)].data() + row_offset(layer, slot, k_row_bytes(layer)); }
  uint8_t* v(int layer, int slot) { return v_[local(layer)].data() + row_offset(layer, slot, v_row_bytes(layer)); }
  const uint8_t* k(int layer, int slot) const {
    return k_[local(layer)].data() + row_offset(layer, slot, k_row_bytes(layer));
  }
  const uint8_t* v(int layer, int slot) const {
    return v_[local(layer)].data() + row_offset(layer, slot, v_row_bytes(layer));
  }

  // Stores n floats at row `pos` of a slot, converting to the cache type.
  void store_k(int layer, int slot, int pos, const float* src);
  void store_v(int layer, int slot, int pos, const float* src);

 private:
  size_t local(int layer) const { return static_cast<size_t>(layer - range_.first); }
  size_t row_offset(int layer, int slot, size_t row_bytes) const {
    return static_cast<size_t>(slot) * static_cast<size_t>(rows(layer)) * row_bytes;
  }

  LayerRange range_;
  int n_slots_;
  int n_ctx_;
  TensorType k_type_, v_type_;
  std::vector<int> k_dim_, v_dim_;              // per local layer
  std::vector<size_t> k_row_bytes_, v_row_bytes_;
  std::vector<int> rows_;  // per local layer
  std::vector<std::vector<uint8_t>> k_, v_;
};

// Writes n floats as one cache row of `type` (the conversion store_k/store_v apply).
void kv_store_row(TensorType type, const float* src, int64_t n, uint8_t* row);

}  // namespace pipellm

// The tensors one pipeline stage needs: views into the GGUF mapping (nothing is copied here).
// A stage covers layers [first, last); the head stage also holds token_embd, the tail stage
// output_norm and output (or token_embd again when the output is tied). Pages of tensors a
// stage does not use are never touched.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"

namespace pipellm {

struct LayerRange {
  int first = 0;
  int last = 0;  // exclusive
  int size() const { return last - first; }
  bool contains(int layer) const { return layer >= first && layer < last; }
  static LayerRange all(const ModelConfig& c) { return {0, c.n_layer}; }
};

// Matrices are stored as GGUF lays them out: ne = [n_in, n_out(, n_expert)], one row per output
// feature. A layer's tensors by role (engine/model/layer_tensors.h); absent roles are null.
struct LayerWeights {
  std::array<const TensorView*, kLayerTensorCount> t{};
  const TensorView* operator[](LayerTensor r) const { return t[static_cast<size_t>(r)]; }
  const TensorView*& operator[](LayerTensor r) { return t[static_cast<size_t>(r)]; }
};

struct ModelWeights {
  LayerRange range;
  const TensorView* token_embd = nullptr;   // [n_embd, n_vocab] (with_embeddings)
  const TensorView* output_norm = nullptr;  // [n_embd]          (with_output)
  const TensorView* output = nullptr;       // [n_embd, n_vocab] (with_output; token_embd if tied)
  const TensorView* rope_freqs = nullptr;   // [n_rot/2] when the model has one
  // gemma4's per-layer inputs, held by every stage with layers (computed from the token ids,
  // which every stage receives): [n_layer*P, n_vocab], [E, n_layer*P], [P]; token_embd too.
  const TensorView* per_layer_token_embd = nullptr;
  const TensorView* per_layer_model_proj = nullptr;
  const TensorView* per_layer_proj_norm = nullptr;
  std::vector<LayerWeights> layers;         // layers[i] is layer range.first + i

  const LayerWeights& layer(int global_index) const { return layers.at(static_cast<size_t>(global_index - range.first)); }
  // Bytes of weights this stage reads per decoded token (matrices of its layers, of MoE layers
  // only the experts one token uses, one embedding row, the whole lm head).
  uint64_t bytes_per_token(const ModelConfig& c) const;

  // Throws FormatError listing every missing tensor, or naming a tensor whose shape or type
  // does not fit the config. The file must outlive the weights.
  static ModelWeights load(const GgufFile& f, const ModelConfig& c, LayerRange range, bool with_embeddings,
                           bool with_output);
};

}  // namespace pipellm

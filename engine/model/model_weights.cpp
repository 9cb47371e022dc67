#include "engine/model/model_weights.h"

#include <sstream>

#include "base/error.h"

namespace pipellm {

namespace {

// Collects lookups so that every missing tensor is reported at once.
class Binder {
 public:
  explicit Binder(const GgufFile& f) : f_(f) {}

  const TensorView* bind(const std::string& name, std::vector<int64_t> shape) {
    const TensorView* t = f_.find_tensor(name);
    if (t == nullptr) {
      missing_.push_back(name);
      return nullptr;
    }
    check_shape(*t, shape);
    check_type(*t);
    return t;
  }

  void finish() const {
    if (missing_.empty()) return;
    std::ostringstream os;
    os << f_.name() << ": missing " << missing_.size() << " tensor" << (missing_.size() > 1 ? "s" : "") << ":";
    // A bounded message however broken the file is.
    constexpr size_t kListed = 16;
    for (size_t i = 0; i < missing_.size() && i < kListed; ++i) os << " " << missing_[i];
    if (missing_.size() > kListed) os << " ... and " << missing_.size() - kListed << " more";
    throw FormatError(os.str());
  }

 private:
  void check_shape(const TensorView& t, const std::vector<int64_t>& shape) const {
    bool ok = true;
    for (size_t i = 0; i < 4; ++i) {
      const int64_t want = i < shape.size() ? shape[i] : 1;
      if (t.ne[i] != want) ok = false;
    }
    if (ok) return;
    std::ostringstream os;
    os << f_.name() << ": tensor " << t.name << " has shape " << t.shape_string() << ", expected [";
    for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
    os << "]";
    throw FormatError(os.str());
  }

  void check_type(const TensorView& t) const {
    const TensorTypeInfo& info = tensor_type_info(t.type);
    if (!info.can_dequantize) {
      throw FormatError(f_.name() + ": tensor " + t.name + " has type " + info.name +
                        ", which PipeLLM cannot compute with");
    }
    if (t.ne[0] % info.block_size != 0) {
      throw FormatError(f_.name() + ": tensor " + t.name + ": row of " + std::to_string(t.ne[0]) +
                        " elements is not a whole number of " + info.name + " blocks");
    }
  }

  const GgufFile& f_;
  std::vector<std::string> missing_;
};

}  // namespace

ModelWeights ModelWeights::load(const GgufFile& f, const ModelConfig& c, LayerRange range, bool with_embeddings,
                                bool with_output) {
  if (range.first < 0 || range.last > c.n_layer || range.first > range.last) {
    throw InvalidArgument(f.name() + ": layer range [" + std::to_string(range.first) + ", " +
                          std::to_string(range.last) + ") is outside the model's " + std::to_string(c.n_layer) +
                          " layers");
  }
  ModelWeights w;
  w.range = range;
  Binder b(f);
  const int64_t E = c.n_embd, V = c.n_vocab;
  const bool per_layer = c.per_layer_input > 0 && range.size() > 0;
  if (with_embeddings || (with_output && c.tied_output) || per_layer) w.token_embd = b.bind("token_embd.weight", {E, V});
  if (per_layer) {
    const int64_t LP = int64_t{c.n_layer} * c.per_layer_input;
    w.per_layer_token_embd = b.bind("per_layer_token_embd.weight", {LP, V});
    w.per_layer_model_proj = b.bind("per_layer_model_proj.weight", {E, LP});
    w.per_layer_proj_norm = b.bind("per_layer_proj_norm.weight", {c.per_layer_input});
  }
  if (with_output) {
    w.output_norm = b.bind("output_norm.weight", {E});
    w.output = c.tied_output ? w.token_embd : b.bind("output.weight", {E, V});
  }
  if (c.has_rope_freqs && range.size() > 0) w.rope_freqs = b.bind("rope_freqs.weight", {c.n_rot / 2});

  for (int il = range.first; il < range.last; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    LayerWeights l;
    for (const TensorSpec& spec : c.layer_tensors(il)) l[spec.role] = b.bind(p + spec.name, spec.shape);
    w.layers.push_back(l);
  }
  b.finish();
  return w;
}

uint64_t ModelWeights::bytes_per_token(const ModelConfig& c) const {
  uint64_t total = 0;
  auto add = [&](const TensorView* t) {
    if (t != nullptr) total += t->nbytes;
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& s = c.layer(range.first + static_cast<int>(i));
    for (LayerTensor r : all_layer_tensors()) {
      const TensorView* t = layers[i][r];
      if (t == nullptr) continue;
      // Stacked experts (and their biases): a token reads n_expert_used of n_expert slices.
      total += is_expert_stack(r) && s.n_expert > 0 ? t->nbytes / static_cast<uint64_t>(s.n_expert) * static_cast<uint64_t>(s.n_expert_used)
                          : t->nbytes;
    }
  }
  if (token_embd != nullptr) total += token_embd->row_bytes();
  add(output_norm);
  add(output);
  return total;
}

}  // namespace pipellm

#include "engine/model/arch/recipe.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace pipellm::arch {

namespace {
constexpr int kMaxLayers = 1 << 14;  // real models have at most a few hundred
}  // namespace

void HParams::fail(const std::string& k, const std::string& what) const {
  throw FormatError(f_.name() + ": " + p_ + k + ": " + what);
}

int HParams::req(const std::string& k) const {
  if (!has(k)) fail(k, "missing key");
  return opt(k, 0);
}

int HParams::layers() const {
  const int n = req("block_count");
  if (n > kMaxLayers) fail("block_count", std::to_string(n) + " layers is more than any model has (" + std::to_string(kMaxLayers) + ")");
  int present = 0;
  for (const TensorView& t : f_.tensors()) {
    if (t.name.rfind("blk.", 0) != 0) continue;
    const size_t dot = t.name.find('.', 4);
    int il = 0;
    bool digits = dot != std::string::npos && dot > 4 && dot - 4 <= 9;
    for (size_t i = 4; digits && i < dot; ++i) {
      if (t.name[i] < '0' || t.name[i] > '9') digits = false;
      il = il * 10 + (t.name[i] - '0');
    }
    if (digits) present = std::max(present, il + 1);
  }
  // A file without tensors (a vocabulary-only or metadata-only file) is sized by the key alone;
  // the loader names what is missing.
  if (!f_.tensors().empty() && n != present) {
    fail("block_count", std::to_string(n) + " layers but the file has tensors for " + std::to_string(present));
  }
  return n;
}

int HParams::opt(const std::string& k, int fallback) const {
  const uint32_t v = f_.get_u32_or(p_ + k, static_cast<uint32_t>(fallback));
  if (v == 0 || v > (1u << 30)) fail(k, "invalid value " + std::to_string(v));
  return static_cast<int>(v);
}

int HParams::opt_nonneg(const std::string& k, int fallback) const {
  const uint32_t v = f_.get_u32_or(p_ + k, static_cast<uint32_t>(fallback));
  if (v > (1u << 30)) fail(k, "invalid value " + std::to_string(v));
  return static_cast<int>(v);
}

float HParams::f32(const std::string& k, float fallback) const {
  const float v = f_.get_f32_or(p_ + k, fallback);
  if (!std::isfinite(v)) fail(k, "not a finite number");
  return v;
}

void read_common(const HParams& h, ModelConfig& c, float default_rms_eps) {
  const GgufFile& f = h.file();
  c.n_layer = h.layers();
  c.n_embd = h.req("embedding_length");
  c.n_head = h.req("attention.head_count");
  c.n_head_kv = h.opt("attention.head_count_kv", c.n_head);
  if (c.n_head % c.n_head_kv != 0) {
    h.fail("attention.head_count", std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
                                       std::to_string(c.n_head_kv));
  }
  c.head_dim = h.opt("attention.key_length", c.n_embd / c.n_head);
  c.head_dim_v = h.opt("attention.value_length", c.head_dim);
  c.n_rot = h.opt("rope.dimension_count", c.head_dim);
  if (c.n_rot > c.head_dim || c.n_rot % 2 != 0) {
    h.fail("rope.dimension_count", std::to_string(c.n_rot) + " does not fit head size " + std::to_string(c.head_dim));
  }
  c.n_ff = h.has("feed_forward_length") ? h.req("feed_forward_length") : 0;
  c.n_ctx_train = h.opt("context_length", 4096);
  c.rms_eps = h.f32("attention.layer_norm_rms_epsilon", default_rms_eps);
  if (!(c.rms_eps > 0.0f)) h.fail("attention.layer_norm_rms_epsilon", "must be positive");

  const TensorView* embd = f.find_tensor("token_embd.weight");
  if (h.has("vocab_size")) {
    c.n_vocab = h.req("vocab_size");
  } else if (embd != nullptr) {
    c.n_vocab = static_cast<int>(embd->ne[1]);
  } else if (f.has("tokenizer.ggml.tokens")) {
    c.n_vocab = static_cast<int>(f.get_string_array("tokenizer.ggml.tokens").size());
  } else {
    throw FormatError(f.name() + ": cannot tell the vocabulary size (no " + h.key("vocab_size") +
                      ", token_embd.weight or tokenizer.ggml.tokens)");
  }
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  c.has_rope_freqs = f.find_tensor("rope_freqs.weight") != nullptr;
}

RopeSpec read_rope(const HParams& h, RopeType type) {
  RopeSpec r;
  r.type = type;
  r.base = h.f32("rope.freq_base", 10000.0f);
  if (!(r.base > 0.0f)) h.fail("rope.freq_base", "must be positive");
  const std::string scaling = h.str("rope.scaling.type", "none");
  if (scaling == "none" || scaling == "llama3") return r;  // llama3: carried by rope_freqs.weight
  const float factor = h.f32("rope.scaling.factor", 1.0f);
  if (!(factor > 0.0f)) h.fail("rope.scaling.factor", "must be positive");
  r.freq_scale = 1.0f / factor;
  if (scaling == "linear") return r;
  if (scaling == "yarn") {
    r.ext_factor = 1.0f;
    r.n_ctx_orig = h.opt("rope.scaling.original_context_length", h.opt("context_length", 4096));
    r.attn_factor = h.f32("rope.scaling.yarn_attn_factor", 1.0f);
    r.beta_fast = h.f32("rope.scaling.yarn_beta_fast", 32.0f);
    r.beta_slow = h.f32("rope.scaling.yarn_beta_slow", 1.0f);
    return r;
  }
  h.fail("rope.scaling.type", "'" + scaling + "' is not supported (none, linear, llama3, yarn)");
}

void read_experts(const HParams& h, LayerSpec& s) {
  s.n_expert = h.req("expert_count");
  s.n_expert_used = h.req("expert_used_count");
  if (s.n_expert_used > s.n_expert) {
    h.fail("expert_used_count", std::to_string(s.n_expert_used) + " exceeds expert_count " + std::to_string(s.n_expert));
  }
}

}  // namespace pipellm::arch

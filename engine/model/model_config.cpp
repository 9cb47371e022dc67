#include "engine/model/model_config.h"

#include <sstream>

#include "engine/gguf/gguf_file.h"
#include "engine/util/error.h"

namespace pipellm {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
  }
  return "?";
}

namespace {

int positive(const GgufFile& f, const std::string& key, uint32_t v) {
  if (v == 0 || v > (1u << 30)) {
    throw FormatError(f.name() + ": " + key + ": invalid value " + std::to_string(v));
  }
  return static_cast<int>(v);
}

}  // namespace

ModelConfig ModelConfig::from_gguf(const GgufFile& f) {
  ModelConfig c;
  const std::string arch = f.get_string("general.architecture");
  if (arch == "llama") {
    c.arch = Arch::Llama;
    c.rope_type = RopeType::Normal;
  } else if (arch == "qwen2") {
    c.arch = Arch::Qwen2;
    c.rope_type = RopeType::Neox;
    c.has_qkv_bias = true;
  } else if (arch == "qwen3") {
    c.arch = Arch::Qwen3;
    c.rope_type = RopeType::Neox;
    c.has_qk_norm = true;
  } else {
    throw FormatError(f.name() + ": unsupported architecture '" + arch +
                      "' (supported: llama, qwen2, qwen3)");
  }
  const std::string p = arch + ".";
  auto req = [&](const std::string& k) { return positive(f, p + k, f.get_u32(p + k)); };
  auto opt = [&](const std::string& k, uint32_t fallback) {
    return positive(f, p + k, f.get_u32_or(p + k, fallback));
  };

  c.n_layer = req("block_count");
  c.n_embd = req("embedding_length");
  c.n_ff = req("feed_forward_length");
  c.n_head = req("attention.head_count");
  c.n_head_kv = opt("attention.head_count_kv", static_cast<uint32_t>(c.n_head));
  if (c.n_head % c.n_head_kv != 0) {
    throw FormatError(f.name() + ": " + p + "attention.head_count " + std::to_string(c.n_head) +
                      " is not a multiple of head_count_kv " + std::to_string(c.n_head_kv));
  }
  c.head_dim = opt("attention.key_length", static_cast<uint32_t>(c.n_embd / c.n_head));
  c.head_dim_v = opt("attention.value_length", static_cast<uint32_t>(c.head_dim));
  c.n_rot = opt("rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  if (c.n_rot > c.head_dim || c.n_rot % 2 != 0) {
    throw FormatError(f.name() + ": " + p + "rope.dimension_count " + std::to_string(c.n_rot) +
                      " does not fit head size " + std::to_string(c.head_dim));
  }
  c.n_ctx_train = opt("context_length", 4096);
  c.rope_base = f.get_f32_or(p + "rope.freq_base", 10000.0f);
  c.rms_eps = f.get_f32_or(p + "attention.layer_norm_rms_epsilon", c.arch == Arch::Llama ? 1e-5f : 1e-6f);
  if (!(c.rope_base > 0.0f) || !(c.rms_eps > 0.0f)) {
    throw FormatError(f.name() + ": " + p + "rope.freq_base / layer_norm_rms_epsilon must be positive");
  }

  const std::string scaling = f.get_string_or(p + "rope.scaling.type", "none");
  if (scaling == "linear") {
    const float factor = f.get_f32_or(p + "rope.scaling.factor", 1.0f);
    if (!(factor > 0.0f)) throw FormatError(f.name() + ": " + p + "rope.scaling.factor must be positive");
    c.rope_freq_scale = 1.0f / factor;
  } else if (scaling != "none" && scaling != "llama3") {
    // "llama3" scaling is carried by rope_freqs.weight; yarn/longrope are not implemented.
    throw FormatError(f.name() + ": " + p + "rope.scaling.type '" + scaling + "' is not supported");
  }

  const TensorView* embd = f.find_tensor("token_embd.weight");
  if (f.has(p + "vocab_size")) {
    c.n_vocab = req("vocab_size");
  } else if (embd != nullptr) {
    c.n_vocab = static_cast<int>(embd->ne[1]);
  } else if (f.has("tokenizer.ggml.tokens")) {
    c.n_vocab = static_cast<int>(f.get_string_array("tokenizer.ggml.tokens").size());
  } else {
    throw FormatError(f.name() + ": cannot tell the vocabulary size (no " + p +
                      "vocab_size, token_embd.weight or tokenizer.ggml.tokens)");
  }

  c.tied_output = f.find_tensor("output.weight") == nullptr;
  c.has_rope_freqs = f.find_tensor("rope_freqs.weight") != nullptr;
  if (f.find_tensor("blk.0.attn_q.bias") != nullptr) c.has_qkv_bias = true;
  if (f.find_tensor("blk.0.attn_q_norm.weight") != nullptr) c.has_qk_norm = true;
  return c;
}

std::string ModelConfig::summary() const {
  std::ostringstream os;
  os << arch_name(arch) << ": " << n_layer << " layers, n_embd " << n_embd << ", heads " << n_head << "/"
     << n_head_kv << " x " << head_dim << ", n_ff " << n_ff << ", vocab " << n_vocab << ", rope "
     << (rope_type == RopeType::Neox ? "neox" : "normal") << " base " << rope_base;
  if (tied_output) os << ", tied output";
  if (has_qkv_bias) os << ", qkv bias";
  if (has_qk_norm) os << ", qk norm";
  return os.str();
}

}  // namespace pipellm

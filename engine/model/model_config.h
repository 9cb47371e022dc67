// Hyperparameters of a llama-family decoder, read from a GGUF file's metadata.
// Supported architectures: llama (normal RoPE), qwen2 (q/k/v biases, NEOX RoPE),
// qwen3 (per-head q/k RMSNorm, NEOX RoPE). Any other `general.architecture` is an error.
#pragma once
#include <cstdint>
#include <string>

namespace pipellm {

class GgufFile;

enum class Arch { Llama, Qwen2, Qwen3 };
// Normal: rotates adjacent pairs (x[2i], x[2i+1]); Neox: rotates (x[i], x[i + n_rot/2]).
enum class RopeType { Normal, Neox };

const char* arch_name(Arch a);

struct ModelConfig {
  Arch arch = Arch::Llama;
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;    // key_length: size of one q/k head
  int head_dim_v = 0;  // value_length: size of one v head
  int n_rot = 0;       // rotated dimensions per head (rope.dimension_count, default head_dim)
  int n_ff = 0;
  int n_vocab = 0;
  int n_ctx_train = 0;
  float rope_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / rope.scaling.factor for linear scaling
  RopeType rope_type = RopeType::Normal;
  float rms_eps = 1e-5f;
  bool has_qkv_bias = false;
  bool has_qk_norm = false;
  bool tied_output = false;    // no output.weight: the lm head is token_embd
  bool has_rope_freqs = false;  // Llama 3.1 rope_freqs.weight (per-dimension frequency divisors)

  int q_dim() const { return n_head * head_dim; }
  int k_dim() const { return n_head_kv * head_dim; }
  int v_dim() const { return n_head_kv * head_dim_v; }

  // Reads the metadata (and which optional tensors exist). Throws FormatError naming the file
  // and the key, or the unsupported architecture.
  static ModelConfig from_gguf(const GgufFile& f);
  std::string summary() const;  // one line for logs
};

}  // namespace pipellm

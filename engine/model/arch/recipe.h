// What every architecture recipe shares: reading the usual hyperparameters under the
// architecture's key prefix, with errors naming the file and key. A recipe
// (engine/model/arch/<arch>.cpp) reads its family's keys and fills ModelConfig::layers.
#pragma once
#include <string>

#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"

namespace pipellm::arch {

class HParams {
 public:
  HParams(const GgufFile& f, const std::string& arch) : f_(f), p_(arch + ".") {}
  const GgufFile& file() const { return f_; }
  std::string key(const std::string& k) const { return p_ + k; }
  bool has(const std::string& k) const { return f_.has(p_ + k); }
  int req(const std::string& k) const;                // a positive integer
  // block_count, checked against the blk.N tensors present before anything is sized by it (a
  // hostile file's 1e9 layers must not allocate 1e9 of anything).
  int layers() const;
  int opt(const std::string& k, int fallback) const;  // a positive integer when present
  int opt_nonneg(const std::string& k, int fallback) const;
  float f32(const std::string& k, float fallback) const;
  std::string str(const std::string& k, const std::string& fallback) const {
    return f_.get_string_or(p_ + k, fallback);
  }
  [[noreturn]] void fail(const std::string& k, const std::string& what) const;

 private:
  const GgufFile& f_;
  std::string p_;
};

// block_count, embedding_length, heads, head sizes, rope dims, context, rms eps, vocabulary,
// tied output, rope_freqs; n_ff from feed_forward_length when present.
void read_common(const HParams& h, ModelConfig& c, float default_rms_eps);
// rope.freq_base and rope.scaling.* (none, linear, yarn; "llama3" is carried by rope_freqs).
RopeSpec read_rope(const HParams& h, RopeType type);
// expert_count / expert_used_count into s (with their checks).
void read_experts(const HParams& h, LayerSpec& s);

void llama_family(const GgufFile& f, ModelConfig& c);  // llama (+ MoE), qwen2, qwen3, qwen3moe
void gemma3(const GgufFile& f, ModelConfig& c);
void phi3(const GgufFile& f, ModelConfig& c);
void gpt_oss(const GgufFile& f, ModelConfig& c);
void qwen35(const GgufFile& f, ModelConfig& c);  // qwen35, qwen35moe
void gemma4(const GgufFile& f, ModelConfig& c);

// The llama-family layer specs of c (from has_qkv_bias / has_qk_norm / arch); also used by
// benchmarks that build a config by hand.
void llama_layers(ModelConfig& c, const LayerSpec& base);

}  // namespace pipellm::arch

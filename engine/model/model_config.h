// Hyperparameters of a decoder read from a GGUF file's metadata, with one LayerSpec per layer:
// what the layer computes (attention window, rope, FFN kind and activation, routing) and which
// optional tensors it holds. Each architecture's recipe (engine/model/arch/<arch>.cpp) fills
// them; the loader, planners, CPU and CUDA passes read only this. Supported: llama (also with
// Mixtral-style experts), qwen2, qwen3, qwen3moe, gemma3, phi3, gpt-oss, qwen35, qwen35moe, gemma4. Anything else is an
// error naming the architecture.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/layer_tensors.h"
#include "kernels/cpu/delta_net.h"
#include "kernels/cpu/gated_activation.h"
#include "kernels/cpu/moe_route.h"

namespace pipellm {

class GgufFile;

enum class Arch { Llama, Qwen2, Qwen3, Qwen3Moe, Gemma3, Phi3, GptOss, Qwen35, Qwen35Moe, Gemma4 };
// Normal: rotates adjacent pairs (x[2i], x[2i+1]); Neox: rotates (x[i], x[i + n_rot/2]).
enum class RopeType { Normal, Neox };
enum class FfnKind { Dense, Moe };
// What mixes tokens: softmax attention over a KV cache, or the Gated DeltaNet recurrence over a
// fixed-size per-sequence state (kernels/cpu/delta_net.h).
enum class Mixer { Attention, DeltaNet };

const char* arch_name(Arch a);
// The general.architecture names the recipes read, e.g. for --version.
std::vector<std::string> supported_architectures();

// RoPE of one layer (kernels/cpu/rope.h has the formulas).
struct RopeSpec {
  RopeType type = RopeType::Normal;
  float base = 10000.0f;
  float freq_scale = 1.0f;   // 1 / scaling factor (linear or YaRN)
  float ext_factor = 0.0f;   // YaRN: 1 when on
  float attn_factor = 1.0f;  // cos/sin magnitude
  bool freq_factors = false; // divide the frequencies by rope_freqs.weight (llama 3.1, gemma4's global layers)
  int n_ctx_orig = 0;        // YaRN: the context the model was trained on
  float beta_fast = 32.0f, beta_slow = 1.0f;
};

struct LayerSpec {
  Mixer mixer = Mixer::Attention;
  DeltaNetShape delta;  // DeltaNet layers
  // Attention. Head geometry per layer (gemma4's sliding and global layers differ); the
  // recipes leave 0 for "the model's" (ModelConfig's fields), filled in by from_gguf.
  int n_head_kv = 0, head_dim = 0, head_dim_v = 0, n_rot = 0;
  int window = 0;           // sliding window in keys (0: attends to the whole causal past)
  float attn_scale = 0.0f;  // score scale
  RopeSpec rope;
  bool qkv_fused = false;   // one attn_qkv matrix (phi3)
  bool qkv_bias = false;    // q/k/v biases (qwen2, gpt-oss)
  bool o_bias = false;      // output projection bias (gpt-oss)
  bool qk_norm = false;     // per-head q/k RMSNorm (qwen3, gemma3)
  bool sinks = false;       // attention sinks (gpt-oss)
  bool post_attn_norm = false;  // RMSNorm of the attention output (gemma3)
  bool gated_q = false;     // attn_q rows hold [q | gate] per head; output *= sigmoid(gate) (qwen35)
  int kv_source = -1;       // >= 0: no K/V of its own, attends to that layer's cache (gemma4)
  bool k_eq_v = false;      // no attn_v: V is the raw K projection (gemma4 MoE global layers)
  bool v_norm = false;      // V = rmsnorm(V) without a weight (gemma4)
  // Feed-forward.
  const char* ffn_norm_name = "ffn_norm";  // gpt-oss calls its pre-FFN norm post_attention_norm
  FfnKind ffn = FfnKind::Dense;
  GatedAct act = GatedAct::Silu;
  int n_ff = 0;               // dense width, or each expert's width
  bool gate_up_fused = false;  // one ffn_up holding [gate; up] (phi3)
  bool post_ffn_norm = false;  // RMSNorm of the FFN output (gemma3)
  int n_expert = 0, n_expert_used = 0;
  MoeRouting routing = MoeRouting::SoftmaxTopK;
  bool router_bias = false, expert_bias = false;  // gpt-oss
  int n_ff_shexp = 0;  // > 0: a shared expert of this width beside the routed ones (qwen35moe)
  // gemma4's MoE layers: a dense GELU MLP of n_ff_dense beside the experts, (rms(dense) *
  // post_ffw_norm_1 + rms(experts) * post_ffw_norm_2); router input rms(x) / sqrt(E) * scale;
  // experts read rms(x) * pre_ffw_norm_2 through one [gate; up] stack, outputs scaled per expert.
  int n_ff_dense = 0;
  bool per_layer_input = false;  // gemma4: x += rms(proj(gelu(inp_gate x) * inp_pl[l])) * post_norm
  bool output_scale = false;     // gemma4: x *= layer_output_scale
};

// One tensor of a layer: its role, GGUF name (without "blk.N.") and shape (ne order).
struct TensorSpec {
  LayerTensor role;
  std::string name;
  std::vector<int64_t> shape;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  // The largest head geometry of any layer (sizes buffers); layers may have smaller ones.
  int n_head_kv = 0;
  int head_dim = 0;    // key_length: size of one q/k head
  int head_dim_v = 0;  // value_length: size of one v head
  int n_rot = 0;       // rotated dimensions per head (rope.dimension_count, default head_dim)
  int n_ff = 0;        // the widest FFN of any layer (dense width or one expert's)
  int n_vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float embd_scale = 1.0f;     // token embeddings are multiplied by it (gemma: sqrt(n_embd))
  float logit_softcap = 0.0f;  // logits -> cap * tanh(logits / cap) when > 0
  int per_layer_input = 0;     // gemma4: P, the per-layer input width (0: none)
  bool tied_output = false;    // no output.weight: the lm head is token_embd
  bool has_rope_freqs = false;  // rope_freqs.weight (per-dimension frequency divisors)
  // Llama-family options detected from the file (the llama recipe turns them into LayerSpecs).
  bool has_qkv_bias = false;
  bool has_qk_norm = false;
  std::vector<LayerSpec> layers;

  int q_dim() const { return n_head * head_dim; }  // the largest of any layer (buffers)
  int k_dim() const { return n_head_kv * head_dim; }
  int v_dim() const { return n_head_kv * head_dim_v; }
  int q_dim(int il) const { return n_head * layer(il).head_dim; }
  int k_dim(int il) const { return layer(il).n_head_kv * layer(il).head_dim; }
  int v_dim(int il) const { return layer(il).n_head_kv * layer(il).head_dim_v; }
  const LayerSpec& layer(int il) const { return layers.at(static_cast<size_t>(il)); }
  bool has_moe() const;
  bool has_recurrent() const;  // any DeltaNet layer
  // How far a slot's last sequence may have gone past the prefix it shares with the next one for
  // the slot's caches to serve that prefix, with steps of at most max_step tokens: any distance
  // where every layer keeps every position; fewer than max_step tokens with sliding-window rings
  // (a ring of window + max_step - 1 rows still holds the window before the prefix's end); none
  // with recurrent layers (their state is that of the sequence's last token).
  int prefix_reuse_limit(int max_step) const;
  int max_expert_used() const;

  // KV rows per sequence slot that layer il keeps for a context of n_ctx when a step holds at
  // most max_step tokens: a sliding-window layer keeps a ring of window + max_step - 1 rows
  // (every query of a step still finds its window after the step's own rows are written).
  // DeltaNet layers keep no rows (0) but a per-sequence state of state_floats(il) floats.
  int kv_rows(int il, int n_ctx, int max_step) const;
  int64_t state_floats(int il) const;

  // The tensors of layer il, from its spec.
  std::vector<TensorSpec> layer_tensors(int il) const;

  // Reads the metadata (and which optional tensors exist). Throws FormatError naming the file
  // and the key, or the unsupported architecture.
  static ModelConfig from_gguf(const GgufFile& f);
  std::string summary() const;  // one line for logs
};

}  // namespace pipellm

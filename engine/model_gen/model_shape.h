// Shapes of real model families, for writing random-weight models of a real size. A shape holds
// what llama.cpp's converter writes into a GGUF file's metadata for the family; which tensors a
// file of that shape has is the architecture's recipe's business (engine/model_gen/model_plan.h).
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pipellm {

struct ModelShape {
  std::string arch = "llama";  // one of model_shape_archs()
  int n_layer = 0;
  int n_embd = 0;
  int n_ff = 0;  // feed_forward_length (dense width; Mixtral-style llama experts are this wide too)
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // 0: n_embd / n_head
  int n_vocab = 0;
  int n_ctx = 4096;
  float rope_base = 10000.0f;
  float rms_eps = 1e-5f;
  bool tied_output = false;

  // Mixture of experts (n_expert 0: dense).
  int n_expert = 0;
  int n_expert_used = 0;
  int n_ff_expert = 0;  // expert_feed_forward_length, where the family names it apart (qwen3moe, gpt-oss)

  // Attention window and rope variants (0 / "none": the key is not written).
  int sliding_window = 0;              // gemma3, gpt-oss; phi3 files carry one that nothing reads
  float rope_base_swa = 0.0f;          // gemma3: rope base of the sliding-window layers
  std::string rope_scaling = "none";   // none | linear | yarn
  float rope_scaling_factor = 1.0f;
  int rope_scaling_orig_ctx = 0;       // yarn: the context the model was trained on
  float logit_softcap = 0.0f;          // final_logit_softcapping
  int n_rot = 0;                       // rope.dimension_count (0: the head size); qwen35 rotates a quarter
  std::vector<int> rope_sections;      // qwen35: rope.dimension_sections (4 IMROPE sections)

  // Gated DeltaNet hybrids (qwen35, qwen35moe): every full_attention_interval-th layer attends,
  // the others are DeltaNet layers with the ssm.* geometry.
  int full_attention_interval = 0;
  int ssm_conv_kernel = 0;
  int ssm_state = 0;    // S: head size of the recurrent keys and values (ssm.state_size)
  int ssm_groups = 0;   // Hk: key heads (ssm.group_count)
  int ssm_v_heads = 0;  // Hv: value heads (ssm.time_step_rank)
  int n_ff_shexp = 0;   // qwen35moe: the shared expert's width

  // gemma4: sliding layers have their own head size and KV heads; the pattern is one global
  // layer every swa_period layers, or swa_layers (one flag per layer) when given.
  int head_dim_swa = 0;       // key_length_swa (head_dim is the global layers')
  int n_head_kv_global = 0;   // KV heads of the global layers (0: n_head_kv)
  int swa_period = 0;
  std::vector<bool> swa_layers;
  int shared_kv_layers = 0;   // the last ones read an earlier layer's KV cache
  int per_layer_input = 0;    // embedding_length_per_layer_input (0: no per-layer inputs)
  bool double_wide_mlp = false;     // the KV-sharing layers' FFN is 2 * n_ff wide (Gemma 4 E2B)
  bool k_eq_v = false;              // global layers have no attn_v (V is the raw K projection)
  bool layer_output_scale = false;  // a layer_output_scale per layer
  bool rope_freqs = false;          // rope_freqs.weight (proportional rope of the global layers)

  // The file type published GGUF files of this model usually have (mkmodel's default).
  std::string file_type = "Q4_K_M";

  int key_length() const { return head_dim > 0 ? head_dim : n_embd / n_head; }
  int rope_dims() const { return n_rot > 0 ? n_rot : key_length(); }
  // gemma4: whether layer il is a sliding-window layer, and its FFN width.
  bool slides(int il) const;
  int layer_ff(int il) const;
};

// The architectures a shape can have: llama, qwen2, qwen3, qwen3moe, gemma3, phi3, gpt-oss,
// qwen35, qwen35moe, gemma4.
const std::vector<std::string>& model_shape_archs();

// llama3-8b, llama3.2-1b, llama2-7b, qwen2.5-7b, qwen2.5-32b, qwen3-8b, gemma3-12b, gemma3-27b,
// phi3-mini, qwen3-30b-a3b, mixtral-8x7b, gpt-oss-20b, qwen3.6-35b-a3b, qwen3.6-27b, gemma4-31b,
// gemma4-26b-a4b, tiny.
std::optional<ModelShape> model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

// The same family at test size: n_embd 256, 2 KV heads with the preset's grouping (up to 4 query
// heads per KV head), dense width 512, experts (and a shared expert) 256 wide and at most 16 of
// them, windows of at most 16 keys, vocabulary 1024, and enough layers to hold one of each kind
// (gemma3 / gemma4: 6, so that the last is global; qwen35: one attention interval). DeltaNet
// layers keep their key/value head ratio with 2 key heads of 32; rotated fractions are kept.
// Everything else (rope, norms, tying, biases, routing) is kept.
ModelShape shrink_shape(const ModelShape& s);

// One line for --help and logs:
// "gpt-oss, 24 layers, n_embd 2880, heads 64/8, 32 experts (4 used), window 128, vocab 201088, MXFP4_MOE".
std::string shape_summary(const ModelShape& s);

}  // namespace pipellm

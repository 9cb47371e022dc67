// Which tensor type each tensor of a model gets for a file type such as Q4_K_M, following
// llama.cpp's llama-quantize (src/llama-quant.cpp) so file sizes match llama.cpp's files of the
// same shape. Checked tensor by tensor against llama.cpp's fixture files (tests/unit/
// quant_mix_test.cpp, model_gen_test.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/tensor_type.h"

namespace pipellm {

struct FileType {
  std::string name;     // "Q4_K_M"
  uint32_t gguf_id;     // general.file_type (llama_ftype)
  TensorType base;      // type of most matrices
};

// F32, F16, BF16, Q8_0, Q4_0, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, MXFP4_MOE, and llama-quantize's
// aliases Q4_K (Q4_K_M) and Q5_K (Q5_K_M) (case-insensitive); nullopt otherwise.
std::optional<FileType> file_type_from_name(const std::string& name);
std::vector<std::string> file_type_names();  // the canonical names, without the aliases
// For llama-quantize's file types PipeLLM cannot write (Q3_K_M, IQ4_XS, ...), the tensor type it
// has no quantizer for; nullopt for every other name (file_type_from_name's included).
std::optional<TensorType> unwritable_file_type(const std::string& name);

// Where a tensor stands among the model's attn_v-like ones (attn_v, and the fused attn_qkv of
// phi3 and of qwen35's DeltaNet layers), which llama-quantize counts in layer order: the _M mixes
// give the index-th of count more bits, Q4_K_S the first four. The default means "one per layer": the tensor's layer
// of n_layer. Models where some layers have none (gemma4's K = V and KV-sharing layers) differ.
struct AttnVSlot {
  int index = -1;
  int count = 0;
};

// The type llama-quantize gives the tensor `name` of shape `ne` (from an F32 source) under `ft`,
// in a model of `n_layer` layers with (`has_output`) or without (tied) a separate output.weight
// and `n_expert` experts per MoE layer (0: dense). Tensors llama-quantize leaves alone stay F32:
// 1-D ones, biases (also the 2-D expert biases), norms, the MoE router (ffn_gate_inp), DeltaNet's
// ssm_conv1d and gemma4's per_layer_model_proj. per_layer_token_embd is typed as token_embd.
// Deliberate difference: a K-quant that does not fit a row falls back to Q8_0 where llama.cpp
// takes Q5_0 / Q5_1 (Q4_K / Q5_K rows not a multiple of 256), which PipeLLM cannot encode.
TensorType choose_tensor_type(const std::string& name, const std::vector<int64_t>& ne, int n_layer,
                              const FileType& ft, bool has_output, int n_expert = 0, AttnVSlot attn_v = {});

// Whether llama-quantize counts the tensor as attn_v-like (see AttnVSlot).
bool is_attn_v_like(const std::string& name);

}  // namespace pipellm

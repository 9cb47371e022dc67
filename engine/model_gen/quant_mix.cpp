#include "engine/model_gen/quant_mix.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace pipellm {
namespace {

const std::vector<FileType>& file_types() {
  static const std::vector<FileType> kTypes = {
      {"F32", 0, TensorType::F32},     {"F16", 1, TensorType::F16},       {"BF16", 32, TensorType::BF16},
      {"Q8_0", 7, TensorType::Q8_0},   {"Q4_0", 2, TensorType::Q4_0},
      {"Q4_K_S", 14, TensorType::Q4_K}, {"Q4_K_M", 15, TensorType::Q4_K},
      {"Q5_K_S", 16, TensorType::Q5_K}, {"Q5_K_M", 17, TensorType::Q5_K},
      {"Q6_K", 18, TensorType::Q6_K},   {"MXFP4_MOE", 38, TensorType::MXFP4},
  };
  return kTypes;
}

// llama-quantize's aliases (its QUANT_OPTIONS list): the bare K-quant names mean the _M mixes.
const char* alias_of(const std::string& upper) {
  if (upper == "Q4_K") return "Q4_K_M";
  if (upper == "Q5_K") return "Q5_K_M";
  return nullptr;
}

// llama-quantize's other file types and the tensor type most of their matrices take, for which
// PipeLLM has no encoder (kernels/cpu/quantize.h): refused by name rather than as unknown.
const std::vector<std::pair<const char*, TensorType>>& unwritable_types() {
  static const std::vector<std::pair<const char*, TensorType>> kTypes = {
      {"Q4_1", TensorType::Q4_1},     {"Q5_0", TensorType::Q5_0},       {"Q5_1", TensorType::Q5_1},
      {"Q2_K", TensorType::Q2_K},     {"Q2_K_S", TensorType::Q2_K},     {"Q3_K", TensorType::Q3_K},
      {"Q3_K_S", TensorType::Q3_K},   {"Q3_K_M", TensorType::Q3_K},     {"Q3_K_L", TensorType::Q3_K},
      {"IQ4_NL", TensorType::IQ4_NL}, {"IQ4_XS", TensorType::IQ4_XS},   {"IQ3_XXS", TensorType::IQ3_XXS},
      {"IQ3_XS", TensorType::IQ3_S},  {"IQ3_S", TensorType::IQ3_S},     {"IQ3_M", TensorType::IQ3_S},
      {"IQ2_XXS", TensorType::IQ2_XXS}, {"IQ2_XS", TensorType::IQ2_XS}, {"IQ2_S", TensorType::IQ2_S},
      {"IQ2_M", TensorType::IQ2_S},   {"IQ1_S", TensorType::IQ1_S},     {"IQ1_M", TensorType::IQ1_M},
      {"TQ1_0", TensorType::TQ1_0},   {"TQ2_0", TensorType::TQ2_0},
  };
  return kTypes;
}

std::string upper_case(const std::string& s) {
  std::string upper = s;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return upper;
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// llama-quantize's tensor_allows_quantization: 2-D and 3-D weights only, never norms or the
// router (a small matrix every token reads in full, kept exact), nor the small DeltaNet conv
// kernels and gemma4's per-layer projection ("not too big so keep them as it is").
bool quantizable(const std::string& name, const std::vector<int64_t>& ne) {
  return ne.size() >= 2 && ends_with(name, "weight") && !contains(name, "_norm.weight") &&
         !contains(name, "ffn_gate_inp.weight") && !contains(name, "ssm_conv1d") &&
         !contains(name, "per_layer_model_proj");
}

// llama-quantize's token-embedding category: gemma4's per-layer embeddings are one too.
bool is_token_embd(const std::string& name) {
  return name == "token_embd.weight" || name == "per_layer_token_embd.weight";
}

bool is_float_type(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }

// llama.cpp gives a few layers' attn_v / ffn_down more bits in the _M mixes: the first and
// last eighth of the layers and every third one in between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

bool is_k_quant(TensorType t) {
  return t == TensorType::Q4_K || t == TensorType::Q5_K || t == TensorType::Q6_K;
}

// K-quants need rows in whole 256-blocks. llama.cpp falls back to Q5_0 / Q5_1 / Q8_0 for
// Q4_K / Q5_K / Q6_K; PipeLLM cannot encode Q5_0 / Q5_1, so every K-quant falls back to Q8_0.
TensorType fit_row(TensorType t, int64_t ne0) {
  if (is_k_quant(t) && ne0 % 256 != 0) return TensorType::Q8_0;
  if (ne0 % tensor_type_info(t).block_size != 0) return TensorType::F16;
  return t;
}

// The lm head (or the embedding that doubles as it): Q8_0 stays Q8_0, MXFP4_MOE takes Q8_0,
// every other quantized mix Q6_K.
TensorType output_type(const FileType& ft) {
  if (ft.base == TensorType::Q8_0 || ft.base == TensorType::MXFP4) return TensorType::Q8_0;
  return TensorType::Q6_K;
}

// "blk.N." -> N; -1 for tensors outside the layers. llama.cpp counts attn_v / ffn_down tensors
// in layer order, which is the layer index (one of each per layer).
int layer_of(const std::string& name) { return name.rfind("blk.", 0) == 0 ? std::atoi(name.c_str() + 4) : -1; }

}  // namespace

bool is_attn_v_like(const std::string& name) {
  return contains(name, "attn_qkv.weight") || contains(name, "attn_v.weight");
}

std::optional<FileType> file_type_from_name(const std::string& name) {
  std::string upper = upper_case(name);
  if (const char* target = alias_of(upper)) upper = target;
  for (const auto& ft : file_types())
    if (ft.name == upper) return ft;
  return std::nullopt;
}

std::optional<TensorType> unwritable_file_type(const std::string& name) {
  const std::string upper = upper_case(name);
  for (const auto& [n, t] : unwritable_types())
    if (upper == n) return t;
  return std::nullopt;
}

std::vector<std::string> file_type_names() {
  std::vector<std::string> out;
  for (const auto& ft : file_types()) out.push_back(ft.name);
  return out;
}

TensorType choose_tensor_type(const std::string& name, const std::vector<int64_t>& ne, int n_layer,
                              const FileType& ft, bool has_output, int n_expert, AttnVSlot attn_v) {
  if (!quantizable(name, ne)) return TensorType::F32;  // as the converter wrote it
  if (is_float_type(ft.base)) return ft.base;          // no mix: every matrix converted
  const bool is_m_mix = ft.name == "Q4_K_M" || ft.name == "Q5_K_M";
  const bool is_q4_k_s = ft.name == "Q4_K_S";
  const int layer = layer_of(name);
  // ffn_down counts by layer; attn_v-like tensors by their place among their kind.
  const bool more_bits = is_m_mix && layer >= 0 && use_more_bits(layer, n_layer);
  const bool more_bits_v =
      attn_v.count > 0 ? is_m_mix && use_more_bits(attn_v.index, attn_v.count) : more_bits;
  // Q4_K_S gives the first four attn_v-like tensors and the first eighth of ffn_down Q5_K.
  const int attn_v_index = attn_v.count > 0 ? attn_v.index : layer;
  const bool q4_k_s_v = is_q4_k_s && attn_v_index >= 0 && attn_v_index < 4;
  const bool q4_k_s_down = is_q4_k_s && layer >= 0 && layer < n_layer / 8;
  // llama.cpp's "8-expert model" bumps (Mixtral-sized): attn_k and attn_v to Q8_0, attn_output
  // to Q5_K in Q4_K_M ("trades just ~128MB").
  const bool eight_experts = n_expert == 8;

  TensorType t = ft.base;
  if (name == "output.weight" || (!has_output && is_token_embd(name))) {
    // With a tied output the embedding matrix doubles as the output head and gets its type (so
    // do gemma4's per-layer embeddings: llama-quantize puts them in the same category).
    t = output_type(ft);
  } else if (ft.base == TensorType::MXFP4) {
    // MXFP4_MOE: expert stacks (3-D, more than one expert) in MXFP4, every other matrix Q8_0.
    t = ne.size() >= 3 && ne[2] > 1 ? TensorType::MXFP4 : TensorType::Q8_0;
  } else if (is_token_embd(name)) {
    // An untied embedding keeps the base type.
  } else if (is_attn_v_like(name)) {
    // llama.cpp treats the fused qkv (phi3, DeltaNet) as an attn_v: its own Q5_K rule is never
    // reached.
    if (more_bits_v) t = TensorType::Q6_K;
    if (q4_k_s_v) t = TensorType::Q5_K;
    if (eight_experts) t = TensorType::Q8_0;
  } else if (contains(name, "attn_k.weight")) {
    if (eight_experts) t = TensorType::Q8_0;
  } else if (contains(name, "attn_output.weight")) {
    if (eight_experts && (ft.name == "Q4_K_M" || is_q4_k_s)) t = TensorType::Q5_K;
  } else if (contains(name, "ffn_down")) {  // ffn_down and the stacked ffn_down_exps
    if (more_bits) t = TensorType::Q6_K;
    if (q4_k_s_down) t = TensorType::Q5_K;
  }
  return fit_row(t, ne[0]);
}

}  // namespace pipellm

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
      {"Q4_K_M", 15, TensorType::Q4_K}, {"Q5_K_M", 17, TensorType::Q5_K}, {"Q6_K", 18, TensorType::Q6_K},
      {"MXFP4_MOE", 38, TensorType::MXFP4},
  };
  return kTypes;
}

// llama.cpp gives a few layers' attn_v / ffn_down more bits in the _M mixes: the first and
// last eighth of the layers and every third one in between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

bool is_k_quant(TensorType t) {
  return t == TensorType::Q4_K || t == TensorType::Q5_K || t == TensorType::Q6_K;
}

// K-quants need rows in whole 256-blocks; like llama.cpp, fall back to a 32-block type.
TensorType fit_row(TensorType t, int64_t ne0) {
  if (is_k_quant(t) && ne0 % 256 != 0) return TensorType::Q8_0;
  if (ne0 % tensor_type_info(t).block_size != 0) return TensorType::F16;
  return t;
}

TensorType output_type(const FileType& ft) {
  switch (ft.base) {
    case TensorType::F32:
    case TensorType::F16:
    case TensorType::BF16:
    case TensorType::Q8_0: return ft.base;
    case TensorType::MXFP4: return TensorType::Q8_0;  // MXFP4_MOE: only experts get MXFP4
    default: return TensorType::Q6_K;
  }
}

}  // namespace

std::optional<FileType> file_type_from_name(const std::string& name) {
  std::string upper = name;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  for (const auto& ft : file_types())
    if (ft.name == upper) return ft;
  return std::nullopt;
}

std::vector<std::string> file_type_names() {
  std::vector<std::string> out;
  for (const auto& ft : file_types()) out.push_back(ft.name);
  return out;
}

uint64_t PlannedTensor::nbytes() const {
  uint64_t rows = 1;
  for (size_t d = 1; d < ne.size(); ++d) rows *= static_cast<uint64_t>(ne[d]);
  return tensor_row_bytes(type, ne[0]) * rows;
}

uint64_t planned_bytes(const std::vector<PlannedTensor>& tensors) {
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.nbytes();
  return total;
}

TensorType choose_tensor_type(const std::string& name, const std::vector<int64_t>& ne, int n_layer,
                              const FileType& ft, bool has_output) {
  if (ne.size() == 1) return TensorType::F32;  // norms, biases, rope factors
  TensorType t = ft.base;
  if (name == "output.weight" || (!has_output && name == "token_embd.weight")) {
    // With a tied output the embedding matrix doubles as the output head and gets its type.
    t = output_type(ft);
  } else if (ft.base == TensorType::MXFP4) {
    // MXFP4_MOE: expert stacks (3-D, more than one expert) in MXFP4, every other matrix Q8_0.
    t = ne.size() >= 3 && ne[2] > 1 ? TensorType::MXFP4 : TensorType::Q8_0;
  } else if (ft.name == "Q4_K_M" || ft.name == "Q5_K_M") {
    const bool v_or_down = name.find(".attn_v.weight") != std::string::npos ||
                           name.find(".ffn_down.weight") != std::string::npos;
    int layer = -1;
    if (v_or_down && name.rfind("blk.", 0) == 0) layer = std::atoi(name.c_str() + 4);
    if (layer >= 0 && use_more_bits(layer, n_layer)) t = TensorType::Q6_K;
  }
  return fit_row(t, ne[0]);
}

std::vector<PlannedTensor> plan_model_tensors(const ModelShape& s, const FileType& ft) {
  const int64_t E = s.n_embd, F = s.n_ff, V = s.n_vocab;
  const int64_t q_dim = static_cast<int64_t>(s.n_head) * s.key_length();
  const int64_t kv_dim = static_cast<int64_t>(s.n_head_kv) * s.key_length();
  std::vector<PlannedTensor> out;
  auto add = [&](std::string name, std::vector<int64_t> ne) {
    const TensorType t = choose_tensor_type(name, ne, s.n_layer, ft, !s.tied_output);
    out.push_back({std::move(name), t, std::move(ne)});
  };
  add("token_embd.weight", {E, V});
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {E});
    add(p + "attn_q.weight", {E, q_dim});
    add(p + "attn_k.weight", {E, kv_dim});
    add(p + "attn_v.weight", {E, kv_dim});
    if (s.has_qkv_bias()) {
      add(p + "attn_q.bias", {q_dim});
      add(p + "attn_k.bias", {kv_dim});
      add(p + "attn_v.bias", {kv_dim});
    }
    if (s.has_qk_norm()) {
      add(p + "attn_q_norm.weight", {s.key_length()});
      add(p + "attn_k_norm.weight", {s.key_length()});
    }
    add(p + "attn_output.weight", {q_dim, E});
    add(p + "ffn_norm.weight", {E});
    add(p + "ffn_gate.weight", {E, F});
    add(p + "ffn_up.weight", {E, F});
    add(p + "ffn_down.weight", {F, E});
  }
  add("output_norm.weight", {E});
  if (!s.tied_output) add("output.weight", {E, V});
  return out;
}

}  // namespace pipellm

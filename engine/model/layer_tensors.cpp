#include "engine/model/layer_tensors.h"

#include <string>

#include "base/error.h"

namespace pipellm {

const LayerTensorInfo& layer_tensor_info(LayerTensor t) {
  static const LayerTensorInfo kInfo[] = {
      {"attn_norm", TensorKind::Vector},      {"q", TensorKind::Matrix},
      {"k", TensorKind::Matrix},              {"v", TensorKind::Matrix},
      {"qkv", TensorKind::Matrix},            {"o", TensorKind::Matrix},
      {"q_bias", TensorKind::Vector},         {"k_bias", TensorKind::Vector},
      {"v_bias", TensorKind::Vector},         {"o_bias", TensorKind::Vector},
      {"q_norm", TensorKind::Vector},         {"k_norm", TensorKind::Vector},
      {"sinks", TensorKind::Vector},          {"post_attn_norm", TensorKind::Vector},
      {"ffn_norm", TensorKind::Vector},       {"gate", TensorKind::Matrix},
      {"up", TensorKind::Matrix},             {"gate_up", TensorKind::Matrix},
      {"down", TensorKind::Matrix},           {"post_ffn_norm", TensorKind::Vector},
      {"router", TensorKind::Matrix},         {"router_bias", TensorKind::Vector},
      {"gate_exps", TensorKind::Matrix},      {"up_exps", TensorKind::Matrix},
      {"down_exps", TensorKind::Matrix},      {"gate_exps_bias", TensorKind::Vector},
      {"up_exps_bias", TensorKind::Vector},   {"down_exps_bias", TensorKind::Vector},
      {"gate_shexp", TensorKind::Matrix},     {"up_shexp", TensorKind::Matrix},
      {"down_shexp", TensorKind::Matrix},     {"router_shexp", TensorKind::Vector},
      {"attn_gate", TensorKind::Matrix},      {"ssm_alpha", TensorKind::Matrix},
      {"ssm_beta", TensorKind::Matrix},       {"ssm_conv1d", TensorKind::Vector},
      {"ssm_a", TensorKind::Vector},          {"ssm_dt_bias", TensorKind::Vector},
      {"ssm_norm", TensorKind::Vector},       {"ssm_out", TensorKind::Matrix},
      {"gate_up_exps", TensorKind::Matrix},   {"down_exps_scale", TensorKind::Vector},
      {"router_scale", TensorKind::Vector},   {"pre_ffw_norm_2", TensorKind::Vector},
      {"post_ffw_norm_1", TensorKind::Vector}, {"post_ffw_norm_2", TensorKind::Vector},
      {"inp_gate", TensorKind::Matrix},       {"proj", TensorKind::Matrix},
      {"post_norm", TensorKind::Vector},      {"layer_output_scale", TensorKind::Vector},
  };
  static_assert(sizeof(kInfo) / sizeof(kInfo[0]) == kLayerTensorCount, "one entry per LayerTensor");
  const size_t i = static_cast<size_t>(t);
  if (i >= kLayerTensorCount) throw Error("layer tensor role " + std::to_string(i) + " is unknown");
  return kInfo[i];
}

std::array<LayerTensor, kLayerTensorCount> all_layer_tensors() {
  std::array<LayerTensor, kLayerTensorCount> a{};
  for (size_t i = 0; i < kLayerTensorCount; ++i) a[i] = static_cast<LayerTensor>(i);
  return a;
}

}  // namespace pipellm

// The tensors a transformer layer may hold, by role. An architecture's recipe
// (engine/model/arch/) says which roles each layer has, under which GGUF name and shape; the
// loader, the planners, the CPU and CUDA passes and the weight streamer index by role, so a new
// family adds roles here only when it brings a new kind of tensor.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

namespace pipellm {

enum class LayerTensor : uint8_t {
  AttnNorm,      // [E] pre-attention norm
  Q, K, V,       // [E, q_dim] [E, k_dim] [E, v_dim]
  Qkv,           // [E, q_dim + k_dim + v_dim] fused (phi3): rows q, then k, then v
  O,             // [n_head*head_dim_v, E]
  QBias, KBias, VBias, OBias,
  QNorm, KNorm,  // [head_dim] per-head RMSNorm of q / k before RoPE
  Sinks,         // [n_head] attention sink logits (gpt-oss)
  PostAttnNorm,  // [E] norm of the attention output before the residual add (gemma3)
  FfnNorm,       // [E] pre-FFN norm
  Gate, Up,      // [E, n_ff]
  GateUp,        // [E, 2*n_ff] fused (phi3): rows gate, then up
  Down,          // [n_ff, E]
  PostFfnNorm,   // [E] norm of the FFN output before the residual add (gemma3)
  Router,        // [E, n_expert]
  RouterBias,    // [n_expert]
  GateExps, UpExps,  // [E, n_ff, n_expert] stacked experts
  DownExps,          // [n_ff, E, n_expert]
  GateExpsBias, UpExpsBias,  // [n_ff, n_expert]
  DownExpsBias,              // [E, n_expert]
  // Shared expert beside the routed ones (qwen35moe): a SwiGLU FFN scaled by sigmoid(gate . h).
  GateShexp, UpShexp,  // [E, n_ff_shexp]
  DownShexp,           // [n_ff_shexp, E]
  RouterShexp,         // [E] one gate value per token
  // Gated DeltaNet (qwen35): attn_qkv is the Qkv role ([E, C] conv channels), attn_gate the
  // output gate z.
  AttnGate,   // [E, Hv*S]
  SsmAlpha,   // [E, Hv]
  SsmBeta,    // [E, Hv]
  SsmConv,    // [K, C] conv kernel per channel
  SsmA,       // [Hv] -exp(A_log)
  SsmDtBias,  // [Hv]
  SsmNorm,    // [S]
  SsmOut,     // [Hv*S, E]
  // gemma4: experts with one [gate; up] stack, a scale per expert, the router's input scale; a
  // dense MLP beside the experts with its own norms; the per-layer input block; an output scale.
  GateUpExps,      // [E, 2*n_ff, n_expert]
  DownExpsScale,   // [n_expert]
  RouterScale,     // [E]
  PreFfwNorm2,     // [E] experts' input norm
  PostFfwNorm1,    // [E] dense MLP output norm
  PostFfwNorm2,    // [E] experts' output norm
  InpGate,         // [E, P]
  Proj,            // [P, E]
  PostNorm,        // [E]
  LayerOutputScale,  // [1]
  Count
};
constexpr size_t kLayerTensorCount = static_cast<size_t>(LayerTensor::Count);

// Matrix: a product weight (2-D, or 3-D stacked experts); Vector: norms, biases, sinks, read as
// floats.
enum class TensorKind { Matrix, Vector };

struct LayerTensorInfo {
  const char* role;  // for messages
  TensorKind kind;
};

const LayerTensorInfo& layer_tensor_info(LayerTensor t);
inline bool is_matrix(LayerTensor t) { return layer_tensor_info(t).kind == TensorKind::Matrix; }
// One slice per expert (the stacked matrices and their biases).
inline bool is_expert_stack(LayerTensor t) {
  return (t >= LayerTensor::GateExps && t <= LayerTensor::DownExpsBias) || t == LayerTensor::GateUpExps ||
         t == LayerTensor::DownExpsScale;
}


// Iterate roles: for (LayerTensor t : all_layer_tensors()) ...
std::array<LayerTensor, kLayerTensorCount> all_layer_tensors();

}  // namespace pipellm

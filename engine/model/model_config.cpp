#include "engine/model/model_config.h"

#include <algorithm>
#include <limits>
#include <sstream>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/arch/recipe.h"

namespace pipellm {

namespace {

struct ArchEntry {
  const char* name;
  Arch arch;
  void (*recipe)(const GgufFile&, ModelConfig&);
};

constexpr ArchEntry kArchs[] = {
    {"llama", Arch::Llama, arch::llama_family},     {"qwen2", Arch::Qwen2, arch::llama_family},
    {"qwen3", Arch::Qwen3, arch::llama_family},     {"qwen3moe", Arch::Qwen3Moe, arch::llama_family},
    {"gemma3", Arch::Gemma3, arch::gemma3},         {"phi3", Arch::Phi3, arch::phi3},
    {"gpt-oss", Arch::GptOss, arch::gpt_oss},       {"qwen35", Arch::Qwen35, arch::qwen35},
    {"qwen35moe", Arch::Qwen35Moe, arch::qwen35},   {"gemma4", Arch::Gemma4, arch::gemma4},
};

}  // namespace

const char* arch_name(Arch a) {
  for (const ArchEntry& e : kArchs) {
    if (e.arch == a) return e.name;
  }
  throw Error("architecture id " + std::to_string(static_cast<int>(a)) + " has no name");
}

std::vector<std::string> supported_architectures() {
  std::vector<std::string> v;
  for (const ArchEntry& e : kArchs) v.push_back(e.name);
  return v;
}

ModelConfig ModelConfig::from_gguf(const GgufFile& f) {
  const std::string name = f.get_string("general.architecture");
  for (const ArchEntry& e : kArchs) {
    if (name != e.name) continue;
    ModelConfig c;
    c.arch = e.arch;
    e.recipe(f, c);
    if (static_cast<int>(c.layers.size()) != c.n_layer) {
      throw Error(f.name() + ": the " + name + " recipe described " + std::to_string(c.layers.size()) + " of " +
                  std::to_string(c.n_layer) + " layers");
    }
    for (LayerSpec& l : c.layers) {
      if (l.n_head_kv == 0) l.n_head_kv = c.n_head_kv;
      if (l.head_dim == 0) l.head_dim = c.head_dim;
      if (l.head_dim_v == 0) l.head_dim_v = c.head_dim_v;
      if (l.n_rot == 0) l.n_rot = c.n_rot;
      if (c.n_head % l.n_head_kv != 0 || l.n_rot > l.head_dim || l.n_rot % 2 != 0) {
        throw FormatError(f.name() + ": a layer's heads (" + std::to_string(c.n_head) + " of size " +
                          std::to_string(l.head_dim) + ", " + std::to_string(l.n_head_kv) + " KV heads, " +
                          std::to_string(l.n_rot) + " rotated dims) do not fit together");
      }
    }
    for (const LayerSpec& l : c.layers) {
      c.n_ff = std::max({c.n_ff, l.n_ff, l.n_ff_dense, l.n_ff_shexp});
      c.n_head_kv = std::max(c.n_head_kv, l.n_head_kv);
      c.head_dim = std::max(c.head_dim, l.head_dim);
      c.head_dim_v = std::max(c.head_dim_v, l.head_dim_v);
      c.n_rot = std::max(c.n_rot, l.n_rot);
    }
    return c;
  }
  std::string known;
  for (const std::string& n : supported_architectures()) known += (known.empty() ? "" : ", ") + n;
  throw FormatError(f.name() + ": unsupported architecture '" + name + "' (supported: " + known + ")");
}

bool ModelConfig::has_moe() const {
  return std::any_of(layers.begin(), layers.end(), [](const LayerSpec& l) { return l.ffn == FfnKind::Moe; });
}

bool ModelConfig::has_recurrent() const {
  return std::any_of(layers.begin(), layers.end(), [](const LayerSpec& l) { return l.mixer == Mixer::DeltaNet; });
}

int ModelConfig::prefix_reuse_limit(int max_step) const {
  int limit = std::numeric_limits<int>::max();
  for (const LayerSpec& l : layers) {
    if (l.mixer == Mixer::DeltaNet) return 0;
    if (l.window > 0) limit = std::max(0, max_step - 1);
  }
  return limit;
}

int ModelConfig::max_expert_used() const {
  int k = 0;
  for (const LayerSpec& l : layers) k = std::max(k, l.ffn == FfnKind::Moe ? l.n_expert_used : 0);
  return k;
}

int ModelConfig::kv_rows(int il, int n_ctx, int max_step) const {
  if (layer(il).mixer == Mixer::DeltaNet) return 0;  // a fixed-size state instead (state_floats)
  if (layer(il).kv_source >= 0) return 0;            // reads another layer's cache
  const int w = layer(il).window;
  if (w <= 0) return n_ctx;
  return static_cast<int>(std::min<int64_t>(n_ctx, int64_t{w} + std::max(1, max_step) - 1));
}

int64_t ModelConfig::state_floats(int il) const {
  const LayerSpec& l = layer(il);
  return l.mixer == Mixer::DeltaNet ? l.delta.state_floats() + l.delta.conv_state_floats() : 0;
}

std::vector<TensorSpec> ModelConfig::layer_tensors(int il) const {
  const LayerSpec& s = layer(il);
  const int64_t E = n_embd, QD = q_dim(il), KD = k_dim(il), VD = v_dim(il), F = s.n_ff, X = s.n_expert;
  std::vector<TensorSpec> t;
  auto add = [&](LayerTensor r, std::string name, std::vector<int64_t> shape) {
    t.push_back({r, std::move(name), std::move(shape)});
  };
  add(LayerTensor::AttnNorm, "attn_norm.weight", {E});
  if (s.mixer == Mixer::DeltaNet) {
    const DeltaNetShape& d = s.delta;
    const int64_t C = d.channels(), HV = d.n_v_heads, VS = int64_t{d.n_v_heads} * d.head;
    add(LayerTensor::Qkv, "attn_qkv.weight", {E, C});
    add(LayerTensor::AttnGate, "attn_gate.weight", {E, VS});
    add(LayerTensor::SsmAlpha, "ssm_alpha.weight", {E, HV});
    add(LayerTensor::SsmBeta, "ssm_beta.weight", {E, HV});
    add(LayerTensor::SsmConv, "ssm_conv1d.weight", {d.conv_kernel, C});
    add(LayerTensor::SsmA, "ssm_a", {HV});
    add(LayerTensor::SsmDtBias, "ssm_dt.bias", {HV});
    add(LayerTensor::SsmNorm, "ssm_norm.weight", {d.head});
    add(LayerTensor::SsmOut, "ssm_out.weight", {VS, E});
  } else if (s.qkv_fused) {
    add(LayerTensor::Qkv, "attn_qkv.weight", {E, QD + KD + VD});
  } else {
    add(LayerTensor::Q, "attn_q.weight", {E, s.gated_q ? 2 * QD : QD});
    if (s.kv_source < 0) {
      add(LayerTensor::K, "attn_k.weight", {E, KD});
      if (!s.k_eq_v) add(LayerTensor::V, "attn_v.weight", {E, VD});
    }
  }
  if (s.qkv_bias) {
    add(LayerTensor::QBias, "attn_q.bias", {QD});
    add(LayerTensor::KBias, "attn_k.bias", {KD});
    add(LayerTensor::VBias, "attn_v.bias", {VD});
  }
  if (s.mixer == Mixer::Attention) {
    if (s.qk_norm) {
      add(LayerTensor::QNorm, "attn_q_norm.weight", {s.head_dim});
      if (s.kv_source < 0) add(LayerTensor::KNorm, "attn_k_norm.weight", {s.head_dim});
    }
    add(LayerTensor::O, "attn_output.weight", {int64_t{n_head} * s.head_dim_v, E});
    if (s.o_bias) add(LayerTensor::OBias, "attn_output.bias", {E});
    if (s.sinks) add(LayerTensor::Sinks, "attn_sinks.weight", {n_head});
  }
  if (s.post_attn_norm) add(LayerTensor::PostAttnNorm, "post_attention_norm.weight", {E});
  add(LayerTensor::FfnNorm, std::string(s.ffn_norm_name) + ".weight", {E});
  switch (s.ffn) {
    case FfnKind::Dense:
      if (s.gate_up_fused) {
        add(LayerTensor::GateUp, "ffn_up.weight", {E, 2 * F});
      } else {
        add(LayerTensor::Gate, "ffn_gate.weight", {E, F});
        add(LayerTensor::Up, "ffn_up.weight", {E, F});
      }
      add(LayerTensor::Down, "ffn_down.weight", {F, E});
      break;
    case FfnKind::Moe:
      add(LayerTensor::Router, "ffn_gate_inp.weight", {E, X});
      if (s.router_bias) add(LayerTensor::RouterBias, "ffn_gate_inp.bias", {X});
      if (s.n_ff_dense > 0) {
        // gemma4: the dense MLP beside the experts, the router's input scale, the experts' norms
        // and their one [gate; up] stack with a scale per expert.
        const int64_t FD = s.n_ff_dense;
        add(LayerTensor::Gate, "ffn_gate.weight", {E, FD});
        add(LayerTensor::Up, "ffn_up.weight", {E, FD});
        add(LayerTensor::Down, "ffn_down.weight", {FD, E});
        add(LayerTensor::PostFfwNorm1, "post_ffw_norm_1.weight", {E});
        add(LayerTensor::RouterScale, "ffn_gate_inp.scale", {E});
        add(LayerTensor::PreFfwNorm2, "pre_ffw_norm_2.weight", {E});
        add(LayerTensor::PostFfwNorm2, "post_ffw_norm_2.weight", {E});
        add(LayerTensor::GateUpExps, "ffn_gate_up_exps.weight", {E, 2 * F, X});
        add(LayerTensor::DownExpsScale, "ffn_down_exps.scale", {X});
      } else {
        add(LayerTensor::GateExps, "ffn_gate_exps.weight", {E, F, X});
        add(LayerTensor::UpExps, "ffn_up_exps.weight", {E, F, X});
      }
      add(LayerTensor::DownExps, "ffn_down_exps.weight", {F, E, X});
      if (s.expert_bias) {
        add(LayerTensor::GateExpsBias, "ffn_gate_exps.bias", {F, X});
        add(LayerTensor::UpExpsBias, "ffn_up_exps.bias", {F, X});
        add(LayerTensor::DownExpsBias, "ffn_down_exps.bias", {E, X});
      }
      if (s.n_ff_shexp > 0) {
        add(LayerTensor::GateShexp, "ffn_gate_shexp.weight", {E, s.n_ff_shexp});
        add(LayerTensor::UpShexp, "ffn_up_shexp.weight", {E, s.n_ff_shexp});
        add(LayerTensor::DownShexp, "ffn_down_shexp.weight", {s.n_ff_shexp, E});
        add(LayerTensor::RouterShexp, "ffn_gate_inp_shexp.weight", {E});
      }
      break;
  }
  if (s.post_ffn_norm) add(LayerTensor::PostFfnNorm, "post_ffw_norm.weight", {E});
  if (s.per_layer_input) {
    add(LayerTensor::InpGate, "inp_gate.weight", {E, per_layer_input});
    add(LayerTensor::Proj, "proj.weight", {per_layer_input, E});
    add(LayerTensor::PostNorm, "post_norm.weight", {E});
  }
  if (s.output_scale) add(LayerTensor::LayerOutputScale, "layer_output_scale.weight", {1});
  return t;
}

std::string ModelConfig::summary() const {
  std::ostringstream os;
  os << arch_name(arch) << ": " << n_layer << " layers, n_embd " << n_embd << ", heads " << n_head << "/"
     << n_head_kv << " x " << head_dim << ", n_ff " << n_ff << ", vocab " << n_vocab;
  if (!layers.empty()) {
    const LayerSpec& l = layers.back();
    os << ", rope " << (l.rope.type == RopeType::Neox ? "neox" : "normal") << " base " << l.rope.base;
    if (l.ffn == FfnKind::Moe) os << ", " << l.n_expert << " experts (" << l.n_expert_used << " used)";
    if (l.act != GatedAct::Silu) os << ", " << gated_act_name(l.act);
  }
  const auto n_sliding = std::count_if(layers.begin(), layers.end(), [](const LayerSpec& l) { return l.window > 0; });
  if (n_sliding > 0) os << ", " << n_sliding << " sliding-window layers";
  if (tied_output) os << ", tied output";
  if (has_qkv_bias) os << ", qkv bias";
  if (has_qk_norm) os << ", qk norm";
  if (logit_softcap > 0.0f) os << ", logit softcap " << logit_softcap;
  return os.str();
}

}  // namespace pipellm

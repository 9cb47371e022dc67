#include "engine/model_gen/model_shape.h"

#include <algorithm>
#include <sstream>

namespace pipellm {

bool ModelShape::slides(int il) const {
  if (!swa_layers.empty()) return swa_layers.at(static_cast<size_t>(il));
  return swa_period > 0 && (il + 1) % swa_period != 0;
}

int ModelShape::layer_ff(int il) const {
  return double_wide_mlp && il >= n_layer - shared_kv_layers ? 2 * n_ff : n_ff;
}

const std::vector<std::string>& model_shape_archs() {
  static const std::vector<std::string> kArchs = {"llama",  "qwen2",  "qwen3",     "qwen3moe", "gemma3",
                                                  "phi3",   "gpt-oss", "qwen35",   "qwen35moe", "gemma4"};
  return kArchs;
}

namespace {

bool is_qwen35(const ModelShape& s) { return s.arch == "qwen35" || s.arch == "qwen35moe"; }

// The fewest layers that hold one of each kind the family has.
int layers_of_every_kind(const ModelShape& s) {
  if (s.arch == "gemma3") return 6;  // the recipe's default pattern: 5 sliding, then a global one
  if (s.arch == "gemma4") return s.swa_period > 0 ? s.swa_period : 6;
  if (is_qwen35(s)) return s.full_attention_interval > 0 ? s.full_attention_interval : 4;  // the recipe's default
  return 2;
}

// IMROPE sections scaled to a smaller rotated width: floors, the remainder spread from the first.
std::vector<int> scale_sections(const std::vector<int>& sections, int from, int to) {
  std::vector<int> out;
  int sum = 0, target = 0;
  for (int v : sections) {
    out.push_back(v * to / from);
    sum += out.back();
    target += v;
  }
  target = target * to / from;
  for (size_t k = 0; k < out.size() && sum < target; ++k, ++sum) ++out[k];
  return out;
}

}  // namespace

ModelShape shrink_shape(const ModelShape& s) {
  ModelShape t = s;
  t.n_layer = std::min(s.n_layer, layers_of_every_kind(s));
  t.swa_layers.clear();  // the period describes the shrunk pattern
  t.n_embd = 256;
  const int group = s.n_head_kv > 0 ? std::max(1, s.n_head / s.n_head_kv) : 1;
  t.n_head_kv = 2;
  t.n_head = 2 * std::min(group, 4);
  if (s.n_head_kv_global > 0) t.n_head_kv_global = std::max(1, t.n_head * s.n_head_kv_global / s.n_head);
  if (s.head_dim > 0) {
    // Families that name the head size apart keep naming it; gemma4's global heads stay as many
    // times wider than its sliding ones, and a partial rotation keeps its fraction.
    t.head_dim = s.head_dim_swa > 0 ? 64 * s.head_dim / s.head_dim_swa : 64;
    if (s.head_dim_swa > 0) t.head_dim_swa = 64;
    if (s.n_rot > 0) t.n_rot = s.n_rot * t.head_dim / s.head_dim;
  }
  if (!s.rope_sections.empty()) t.rope_sections = scale_sections(s.rope_sections, s.rope_dims(), t.rope_dims());
  if (s.ssm_groups > 0) {
    t.ssm_groups = 2;
    t.ssm_v_heads = 2 * std::min(std::max(1, s.ssm_v_heads / s.ssm_groups), 4);
    t.ssm_state = 32;
  }
  if (s.n_expert > 0) {
    t.n_expert = std::min(s.n_expert, 16);
    t.n_expert_used = std::min(s.n_expert_used, t.n_expert / 2);
    if (s.n_ff_expert > 0) t.n_ff_expert = 256;
    if (s.n_ff_shexp > 0) t.n_ff_shexp = 256;
  }
  // Mixtral's experts are n_ff wide; qwen35moe has no dense width at all.
  if (s.n_ff > 0) t.n_ff = s.n_expert > 0 && s.n_ff_expert == 0 ? 256 : 512;
  if (s.per_layer_input > 0) t.per_layer_input = 32;
  if (s.sliding_window > 0) t.sliding_window = std::min(s.sliding_window, 16);
  t.n_vocab = 1024;
  return t;
}

std::string shape_summary(const ModelShape& s) {
  std::ostringstream os;
  os << s.arch << ", " << s.n_layer << " layers";
  if (s.full_attention_interval > 0) os << " (attention every " << s.full_attention_interval << ")";
  os << ", n_embd " << s.n_embd << ", heads " << s.n_head << "/" << s.n_head_kv;
  if (s.n_head_kv_global > 0) os << " (global " << s.n_head_kv_global << ")";
  if (s.n_expert > 0) os << ", " << s.n_expert << " experts (" << s.n_expert_used << " used)";
  if (s.n_ff_shexp > 0) os << " + shared";
  if (s.sliding_window > 0 && s.arch != "phi3") os << ", window " << s.sliding_window;
  if (s.tied_output) os << ", tied";
  os << ", vocab " << s.n_vocab << ", " << s.file_type;
  return os.str();
}

}  // namespace pipellm

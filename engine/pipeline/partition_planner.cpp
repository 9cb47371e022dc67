#include "engine/pipeline/partition_planner.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <sstream>

#include "engine/gguf/gguf_file.h"
#include "engine/model/expert_placement.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model_config.h"

namespace pipellm {

namespace {

// Bytes of n cache values of type t, in whole blocks (a KvCache row).
uint64_t kv_value_bytes(KvType t, int64_t n) {
  const TensorTypeInfo& info = tensor_type_info(kv_tensor_type(t));
  const int64_t blocks = (n + info.block_size - 1) / info.block_size;
  return static_cast<uint64_t>(blocks) * info.block_bytes;
}

}  // namespace

ModelSizes ModelSizes::from_gguf(const GgufFile& f, const ModelConfig& c, KvType kv) { return from_gguf(f, c, kv, kv); }

ModelSizes ModelSizes::from_gguf(const GgufFile& f, const ModelConfig& c, const PipelineConfig& p) {
  return from_gguf(f, c, p.kv_cache_type_k, p.kv_cache_type_v);
}

// KV bytes as the stages keep them: rows of the type's elements or blocks (engine/model/kv_cache.h).
ModelSizes ModelSizes::from_gguf(const GgufFile& f, const ModelConfig& c, KvType k, KvType v) {
  ModelSizes m;
  m.layer_bytes.assign(static_cast<size_t>(c.n_layer), 0);
  m.layer_read_bytes.assign(static_cast<size_t>(c.n_layer), 0);
  m.layer_expert_bytes.assign(static_cast<size_t>(c.n_layer), 0);
  for (int il = 0; il < c.n_layer; ++il) m.layer_window.push_back(c.layer(il).window);
  const TensorView* embd = f.find_tensor("token_embd.weight");
  for (const TensorView& t : f.tensors()) {
    if (t.name.rfind("blk.", 0) == 0) {
      const size_t dot = t.name.find('.', 4);
      int il = -1;
      try {
        il = std::stoi(t.name.substr(4, dot - 4));
      } catch (const std::exception&) {
        il = -1;
      }
      if (il >= 0 && il < c.n_layer) {
        const LayerSpec& l = c.layer(il);
        const bool experts = l.n_expert > 0 && t.name.find("_exps.") != std::string::npos;
        m.layer_bytes[static_cast<size_t>(il)] += t.nbytes;
        if (experts && t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0) {
          m.layer_expert_bytes[static_cast<size_t>(il)] += t.nbytes;
        }
        m.layer_read_bytes[static_cast<size_t>(il)] +=
            experts ? t.nbytes / static_cast<uint64_t>(l.n_expert) * static_cast<uint64_t>(l.n_expert_used) : t.nbytes;
      }
    } else if (t.name == "output_norm.weight" || t.name == "output.weight") {
      m.output_bytes += t.nbytes;
    }
  }
  if (embd != nullptr) {
    m.embd_bytes = embd->nbytes;
    m.embd_row_bytes = embd->row_bytes();
    if (c.tied_output) {
      m.output_bytes += embd->nbytes;
      m.tied_output = true;
    }
  }
  m.kv_bytes_per_token = kv_value_bytes(k, c.k_dim()) + kv_value_bytes(v, c.v_dim());
  for (int il = 0; il < c.n_layer; ++il) {
    // Recurrent layers keep a state instead, KV-sharing layers read another layer's cache.
    const bool own_kv = c.layer(il).mixer == Mixer::Attention && c.layer(il).kv_source < 0;
    if (own_kv) {  // a quantized cache needs whole blocks per head: say so before planning
      check_kv_head_dim(kv_tensor_type(k), c.layer(il).head_dim, "plan: layer " + std::to_string(il) + " K");
      check_kv_head_dim(kv_tensor_type(v), c.layer(il).head_dim_v, "plan: layer " + std::to_string(il) + " V");
    }
    m.layer_kv_bytes_per_token.push_back(own_kv ? kv_value_bytes(k, c.k_dim(il)) + kv_value_bytes(v, c.v_dim(il)) : 0);
    m.layer_state_bytes.push_back(static_cast<uint64_t>(c.state_floats(il)) * sizeof(float));
    m.layer_kv_source.push_back(c.layer(il).kv_source);
  }
  return m;
}

PlanInput PlanInput::from_config(const PipelineConfig& c, const ModelConfig& m) {
  PlanInput in;
  in.n_stages = c.n_stages();
  for (const auto& s : c.stages) {
    in.budgets.push_back(s.memory_bytes);
    if (s.layers) in.explicit_layers.push_back(*s.layers);
    in.host_experts.push_back(s.is_gpu() && s.experts.any() ? host_expert_layers(m, s.experts) : std::vector<bool>{});
  }
  in.kv_positions = static_cast<uint64_t>(c.context_length) * static_cast<uint64_t>(c.max_sequences);
  in.context_length = c.context_length;
  in.max_sequences = c.max_sequences;
  in.scratch_bytes = c.scratch_bytes;
  return in;
}

uint64_t PartitionPlan::bottleneck() const {
  uint64_t m = 0;
  for (const auto& s : stages) m = std::max(m, s.read_bytes);
  return m;
}

double PartitionPlan::balance() const {
  if (stages.empty() || bottleneck() == 0) return 1.0;
  double sum = 0.0;
  for (const auto& s : stages) sum += static_cast<double>(s.read_bytes);
  return sum / static_cast<double>(stages.size()) / static_cast<double>(bottleneck());
}

namespace {

std::string human_bytes(uint64_t b) {
  char buf[64];
  const double v = static_cast<double>(b);
  if (b >= (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", v / 1073741824.0);
  } else if (b >= (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%.2f MiB", v / 1048576.0);
  } else if (b >= (1ull << 10)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", v / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  }
  return buf;
}

class Costs {
 public:
  Costs(const ModelSizes& m, const PlanInput& in)
      : m_(m), in_(in), prefix_(m.layer_bytes.size() + 1, 0), read_prefix_(prefix_), kv_prefix_(prefix_) {
    for (size_t i = 0; i < m.layer_bytes.size(); ++i) {
      prefix_[i + 1] = prefix_[i] + m.layer_bytes[i];
      read_prefix_[i + 1] = read_prefix_[i] + (i < m.layer_read_bytes.size() ? m.layer_read_bytes[i] : m.layer_bytes[i]);
      const uint64_t per_token = i < m.layer_kv_bytes_per_token.size() ? m.layer_kv_bytes_per_token[i] : m.kv_bytes_per_token;
      const uint64_t state = i < m.layer_state_bytes.size() ? m.layer_state_bytes[i] : 0;
      kv_prefix_[i + 1] = kv_prefix_[i] + per_token * kv_positions(i) +
                          state * static_cast<uint64_t>(std::max(1, in.max_sequences));
    }
  }

  // KV positions a layer keeps: all of them, or a sliding window's ring per sequence
  // (ModelConfig::kv_rows).
  uint64_t kv_positions(size_t layer) const {
    const int w = layer < m_.layer_window.size() ? m_.layer_window[layer] : 0;
    if (w <= 0 || in_.context_length <= 0) return in_.kv_positions;
    const uint64_t rows = std::min<uint64_t>(static_cast<uint64_t>(in_.context_length),
                                             static_cast<uint64_t>(w) + static_cast<uint64_t>(in_.step_tokens) - 1);
    return rows * static_cast<uint64_t>(std::max(1, in_.max_sequences));
  }

  StagePlan stage(int s, int first, int last) const {
    StagePlan p;
    p.first = first;
    p.last = last;
    p.has_embeddings = s == 0;
    p.has_output = s == in_.n_stages - 1;
    const size_t a = static_cast<size_t>(first), b = static_cast<size_t>(last);
    p.weight_bytes = prefix_[b] - prefix_[a];
    p.read_bytes = read_prefix_[b] - read_prefix_[a];
    // Experts the stage keeps in host memory do not count against its (device) budget.
    if (static_cast<size_t>(s) < in_.host_experts.size()) {
      const std::vector<bool>& host = in_.host_experts[static_cast<size_t>(s)];
      for (size_t il = a; il < b && il < host.size() && il < m_.layer_expert_bytes.size(); ++il) {
        if (host[il]) p.weight_bytes -= m_.layer_expert_bytes[il];
      }
    }
    if (p.has_embeddings) {
      p.weight_bytes += m_.embd_bytes;
      p.read_bytes += m_.embd_row_bytes;
    }
    if (p.has_output) {
      // A tied head shares token_embd with the first stage when both are the same rank.
      const bool shared = p.has_embeddings && m_.tied_output;
      p.weight_bytes += shared ? m_.output_bytes - m_.embd_bytes : m_.output_bytes;
      p.read_bytes += m_.output_bytes;
    }
    p.kv_bytes = kv_prefix_[b] - kv_prefix_[a];
    p.scratch_bytes = in_.scratch_bytes;
    p.budget = budget(s);
    return p;
  }

  bool fits(const StagePlan& p) const { return p.budget == 0 || p.total() <= p.budget; }
  // A layer that reads another layer's KV cache (gemma4) must share its stage: -1 when
  // [first, last) keeps them together, else the first layer that would read across the cut.
  int kv_reader_cut_off(int first, int last) const {
    for (int l = first; l < last && static_cast<size_t>(l) < m_.layer_kv_source.size(); ++l) {
      const int src = m_.layer_kv_source[static_cast<size_t>(l)];
      if (src >= 0 && src < first) return l;
    }
    return -1;
  }
  uint64_t budget(int s) const {
    return static_cast<size_t>(s) < in_.budgets.size() ? in_.budgets[static_cast<size_t>(s)] : 0;
  }

 private:
  const ModelSizes& m_;
  const PlanInput& in_;
  std::vector<uint64_t> prefix_, read_prefix_, kv_prefix_;  // per layer prefix sums
};

std::string stage_over_budget(int s, const StagePlan& p) {
  std::ostringstream os;
  os << "stage " << s << " (layers [" << p.first << ", " << p.last << ")) needs " << human_bytes(p.total())
     << " (weights " << human_bytes(p.weight_bytes) << ", KV " << human_bytes(p.kv_bytes) << ", scratch "
     << human_bytes(p.scratch_bytes) << ") but its budget is " << human_bytes(p.budget);
  return os.str();
}

PartitionPlan check_explicit(const ModelSizes& m, const PlanInput& in, const Costs& costs) {
  if (static_cast<int>(in.explicit_layers.size()) != in.n_stages) {
    throw InvalidArgument("plan: " + std::to_string(in.explicit_layers.size()) + " explicit layer ranges for " +
                          std::to_string(in.n_stages) + " stages");
  }
  PartitionPlan plan;
  plan.explicit_split = true;
  int expect = 0;
  for (int s = 0; s < in.n_stages; ++s) {
    const auto [a, b] = in.explicit_layers[static_cast<size_t>(s)];
    if (a != expect || b < a) {
      throw InvalidArgument("plan: stage " + std::to_string(s) + " layers [" + std::to_string(a) + ", " +
                            std::to_string(b) + ") do not continue from layer " + std::to_string(expect));
    }
    if (b > m.n_layer()) {
      throw InvalidArgument("plan: stage " + std::to_string(s) + " layers [" + std::to_string(a) + ", " +
                            std::to_string(b) + ") go beyond the model's " + std::to_string(m.n_layer()) + " layers");
    }
    expect = b;
    if (const int l = costs.kv_reader_cut_off(a, b); l >= 0) {
      throw InvalidArgument("plan: stage " + std::to_string(s) + " holds layer " + std::to_string(l) +
                            ", which reads the KV cache of layer " +
                            std::to_string(m.layer_kv_source[static_cast<size_t>(l)]) + " of an earlier stage: keep them in one stage");
    }
    plan.stages.push_back(costs.stage(s, a, b));
    if (!costs.fits(plan.stages.back())) throw InvalidArgument("plan: " + stage_over_budget(s, plan.stages.back()));
  }
  if (expect != m.n_layer()) {
    throw InvalidArgument("plan: the explicit split covers layers [0, " + std::to_string(expect) + ") but the model has " +
                          std::to_string(m.n_layer()));
  }
  return plan;
}

[[noreturn]] void explain_impossible(const ModelSizes& m, const PlanInput& in, const Costs& costs) {
  // Total demand against total budget, when every budget is finite.
  bool all_finite = true;
  uint64_t total_budget = 0;
  for (int s = 0; s < in.n_stages; ++s) {
    all_finite = all_finite && costs.budget(s) != 0;
    total_budget += costs.budget(s);
  }
  uint64_t need = 0;
  for (int s = 0; s < in.n_stages; ++s) {
    const StagePlan p = costs.stage(s, 0, 0);
    need += p.total();
  }
  const StagePlan all = costs.stage(-1, 0, m.n_layer());  // layers + KV only (neither first nor last)
  need += all.weight_bytes + all.kv_bytes;
  std::ostringstream os;
  os << "plan: no split of " << m.n_layer() << " layers over " << in.n_stages << " stages fits: ";
  if (all_finite && need > total_budget) {
    os << "the model needs " << human_bytes(need) << " in all (weights, KV cache at " << in.kv_positions
       << " positions, scratch) but the budgets add up to " << human_bytes(total_budget);
  } else {
    // Find a stage that cannot hold even its fixed parts and its lightest layer.
    const uint64_t lightest = *std::min_element(m.layer_bytes.begin(), m.layer_bytes.end());
    bool named = false;
    for (int s = 0; s < in.n_stages && !named; ++s) {
      StagePlan p = costs.stage(s, 0, 0);
      p.weight_bytes += lightest;
      p.kv_bytes = m.kv_bytes_per_token * in.kv_positions;
      if (!costs.fits(p)) {
        os << "stage " << s << " cannot hold even one layer: " << stage_over_budget(s, p).substr(std::to_string(s).size() + 7);
        named = true;
      }
    }
    if (!named) {
      os << "the layers cannot be cut into contiguous ranges that each fit their stage's budget (layers that read "
            "another layer's KV cache stay with it)";
    }
  }
  throw InvalidArgument(os.str());
}

}  // namespace

PartitionPlan plan_partition(const ModelSizes& m, const PlanInput& in) {
  const int S = in.n_stages, L = m.n_layer();
  if (S < 1) throw InvalidArgument("plan: need at least one stage");
  if (L < 1) throw InvalidArgument("plan: the model has no layers");
  Costs costs(m, in);
  if (!in.explicit_layers.empty()) return check_explicit(m, in, costs);
  if (S > L) {
    throw InvalidArgument("plan: " + std::to_string(S) + " stages but the model has only " + std::to_string(L) +
                          " layers (give an explicit `layers:` split to allow a stage without layers)");
  }

  // Pass 1: the smallest achievable bottleneck. best[s][i]: stages 0..s hold layers [0, i).
  constexpr uint64_t kInf = std::numeric_limits<uint64_t>::max();
  const size_t W = static_cast<size_t>(L) + 1;
  std::vector<uint64_t> best(static_cast<size_t>(S) * W, kInf);
  auto at = [&](std::vector<uint64_t>& v, int s, int i) -> uint64_t& { return v[static_cast<size_t>(s) * W + static_cast<size_t>(i)]; };
  for (int s = 0; s < S; ++s) {
    for (int i = s + 1; i <= L - (S - 1 - s); ++i) {
      for (int j = s; j < i; ++j) {
        const uint64_t prev = s == 0 ? (j == 0 ? 0 : kInf) : at(best, s - 1, j);
        if (prev == kInf) continue;
        const StagePlan p = costs.stage(s, j, i);
        if (!costs.fits(p) || costs.kv_reader_cut_off(j, i) >= 0) continue;
        at(best, s, i) = std::min(at(best, s, i), std::max(prev, p.read_bytes));
      }
    }
  }
  const uint64_t bottleneck = at(best, S - 1, L);
  if (bottleneck == kInf) explain_impossible(m, in, costs);

  // Pass 2: among splits whose stages all stay within the bottleneck, the smallest sum of squares
  // (in units of the bottleneck, as doubles). Ties keep the first j found, i.e. the earliest cut.
  const double unit = bottleneck == 0 ? 1.0 : static_cast<double>(bottleneck);
  std::vector<double> sq(static_cast<size_t>(S) * W, std::numeric_limits<double>::infinity());
  std::vector<int> from(static_cast<size_t>(S) * W, -1);
  for (int s = 0; s < S; ++s) {
    for (int i = s + 1; i <= L - (S - 1 - s); ++i) {
      const size_t k = static_cast<size_t>(s) * W + static_cast<size_t>(i);
      for (int j = s; j < i; ++j) {
        const double prev = s == 0 ? (j == 0 ? 0.0 : std::numeric_limits<double>::infinity())
                                   : sq[static_cast<size_t>(s - 1) * W + static_cast<size_t>(j)];
        if (prev == std::numeric_limits<double>::infinity()) continue;
        const StagePlan p = costs.stage(s, j, i);
        if (!costs.fits(p) || p.read_bytes > bottleneck || costs.kv_reader_cut_off(j, i) >= 0) continue;
        const double r = static_cast<double>(p.read_bytes) / unit;
        const double v = prev + r * r;
        if (v < sq[k] - 1e-12) {
          sq[k] = v;
          from[k] = j;
        }
      }
    }
  }
  PartitionPlan plan;
  std::vector<int> cuts(static_cast<size_t>(S) + 1, 0);
  cuts[static_cast<size_t>(S)] = L;
  for (int s = S - 1; s >= 0; --s) {
    const int j = from[static_cast<size_t>(s) * W + static_cast<size_t>(cuts[static_cast<size_t>(s) + 1])];
    if (j < 0) explain_impossible(m, in, costs);  // unreachable: pass 1 found a split
    cuts[static_cast<size_t>(s)] = j;
  }
  for (int s = 0; s < S; ++s) plan.stages.push_back(costs.stage(s, cuts[static_cast<size_t>(s)], cuts[static_cast<size_t>(s) + 1]));
  return plan;
}

std::string format_plan(const PartitionPlan& p) {
  std::ostringstream os;
  os << (p.explicit_split ? "explicit split" : "planned split") << ", " << p.stages.size() << " stage"
     << (p.stages.size() == 1 ? "" : "s") << ", bottleneck " << human_bytes(p.bottleneck()) << " read per token, balance ";
  char bal[32];
  std::snprintf(bal, sizeof bal, "%.3f", p.balance());
  os << bal << "\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-6s %-12s %-5s %12s %12s %12s %12s %12s %12s\n", "stage", "layers", "parts",
                "read/token", "weights", "KV cache", "scratch", "budget", "headroom");
  os << line;
  for (size_t s = 0; s < p.stages.size(); ++s) {
    const StagePlan& st = p.stages[s];
    const std::string range = "[" + std::to_string(st.first) + ", " + std::to_string(st.last) + ")";
    std::string parts = std::string(st.has_embeddings ? "E" : "") + (st.has_output ? "O" : "");
    if (parts.empty()) parts = "-";
    const std::string budget = st.budget == 0 ? "unlimited" : human_bytes(st.budget);
    std::string head = "-";
    if (st.budget != 0) {
      const int64_t h = st.headroom();
      head = (h < 0 ? "-" : "") + human_bytes(static_cast<uint64_t>(h < 0 ? -h : h));
    }
    std::snprintf(line, sizeof line, "%-6zu %-12s %-5s %12s %12s %12s %12s %12s %12s\n", s, range.c_str(),
                  parts.c_str(), human_bytes(st.read_bytes).c_str(), human_bytes(st.weight_bytes).c_str(),
                  human_bytes(st.kv_bytes).c_str(), human_bytes(st.scratch_bytes).c_str(), budget.c_str(),
                  head.c_str());
    os << line;
  }
  os << "parts: E = token embeddings, O = output norm and head\n";
  return os.str();
}

const char* layer_kind_name(LayerKind k) {
  switch (k) {
    case LayerKind::Full: return "full";
    case LayerKind::Sliding: return "sliding ring";
    case LayerKind::Recurrent: return "recurrent";
    case LayerKind::Shared: return "shared";
  }
  return "?";
}

LayerKind layer_kind(const ModelSizes& m, int layer) {
  const size_t i = static_cast<size_t>(layer);
  if (i < m.layer_kv_source.size() && m.layer_kv_source[i] >= 0) return LayerKind::Shared;
  if (i < m.layer_state_bytes.size() && m.layer_state_bytes[i] > 0) return LayerKind::Recurrent;
  if (i < m.layer_window.size() && m.layer_window[i] > 0) return LayerKind::Sliding;
  return LayerKind::Full;
}

std::vector<LayerKindMemory> layer_memory_by_kind(const ModelSizes& m, const PlanInput& in) {
  const uint64_t seqs = static_cast<uint64_t>(std::max(1, in.max_sequences));
  // Positions per sequence as the planner's KV model counts them (Costs::kv_positions).
  const int context = in.context_length > 0 ? in.context_length : static_cast<int>(in.kv_positions / seqs);
  std::vector<LayerKindMemory> kinds;
  for (LayerKind k : {LayerKind::Full, LayerKind::Sliding, LayerKind::Recurrent, LayerKind::Shared}) {
    LayerKindMemory km;
    km.kind = k;
    for (int l = 0; l < m.n_layer(); ++l) {
      if (layer_kind(m, l) != k) continue;
      const size_t i = static_cast<size_t>(l);
      ++km.layers;
      if (k == LayerKind::Recurrent) {
        km.bytes_per_sequence += m.layer_state_bytes[i];
      } else if (k == LayerKind::Shared) {
        const int src = m.layer_kv_source[i];
        if (std::find(km.sources.begin(), km.sources.end(), src) == km.sources.end()) km.sources.push_back(src);
      } else {
        const uint64_t per_token = i < m.layer_kv_bytes_per_token.size() ? m.layer_kv_bytes_per_token[i] : m.kv_bytes_per_token;
        const int rows = k == LayerKind::Sliding
                             ? std::min(context, m.layer_window[i] + std::max(1, in.step_tokens) - 1)
                             : context;
        km.rows_per_sequence = km.layers == 1 || km.rows_per_sequence == rows ? rows : -1;
        km.kv_bytes_per_token += per_token;
        km.bytes_per_sequence += per_token * static_cast<uint64_t>(rows);
      }
    }
    std::sort(km.sources.begin(), km.sources.end());
    km.bytes = km.bytes_per_sequence * seqs;
    if (km.layers > 0) kinds.push_back(km);
  }
  return kinds;
}

std::string format_layer_memory(const ModelSizes& m, const PlanInput& in) {
  const std::vector<LayerKindMemory> kinds = layer_memory_by_kind(m, in);
  std::ostringstream os;
  os << "memory by kind of layer (context " << in.context_length << ", " << std::max(1, in.max_sequences)
     << " sequences, steps of " << in.step_tokens << " tokens):\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-13s %6s %13s %9s %17s %14s\n", "kind", "layers", "KV/token (B)", "rows/seq",
                "per sequence (B)", "all sequences");
  os << line;
  const auto num = [](uint64_t v) { return std::to_string(static_cast<unsigned long long>(v)); };
  for (const LayerKindMemory& k : kinds) {
    const bool kv = k.kind == LayerKind::Full || k.kind == LayerKind::Sliding;
    const std::string rows = !kv ? "-" : k.rows_per_sequence < 0 ? "mixed" : std::to_string(k.rows_per_sequence);
    std::string note;
    if (k.kind == LayerKind::Recurrent) note = "  fixed state, any context";
    if (k.kind == LayerKind::Shared) {
      note = "  no cache of their own: read layers";
      for (size_t s = 0; s < k.sources.size(); ++s) note += (s ? ", " : " ") + std::to_string(k.sources[s]);
    }
    std::snprintf(line, sizeof line, "%-13s %6d %13s %9s %17s %14s", layer_kind_name(k.kind), k.layers,
                  kv ? num(k.kv_bytes_per_token).c_str() : "-", rows.c_str(), num(k.bytes_per_sequence).c_str(),
                  k.bytes > 0 ? human_bytes(k.bytes).c_str() : "-");
    os << line << note << "\n";
  }
  for (const LayerKindMemory& k : kinds) {
    if (k.kind != LayerKind::Recurrent) continue;
    os << "recurrent state per sequence: " << num(k.bytes_per_sequence) << " B (" << human_bytes(k.bytes_per_sequence)
       << ") in " << k.layers << " layer" << (k.layers == 1 ? "" : "s") << "\n";
  }
  return os.str();
}

}  // namespace pipellm

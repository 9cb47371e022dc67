#include "engine/cpu/cpu_stage.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "engine/model/layer_rope.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/hybrid_ops.h"
#include "kernels/cpu/rmsnorm.h"

namespace pipellm {

namespace {

std::vector<float> to_floats(const TensorView* t) {
  if (t == nullptr) return {};
  std::vector<float> v(static_cast<size_t>(t->n_elements()));
  dequantize_row(t->type, t->data, v.data(), t->n_elements());
  return v;
}

}  // namespace

CpuStage::CpuStage(const GgufFile& f, const ModelConfig& c, LayerRange range, bool first, bool last,
                   const CpuStageOptions& opt, ThreadPool& pool)
    : cfg_(c),
      weights_(ModelWeights::load(f, c, range, first, last)),
      first_(first),
      last_(last),
      max_batch_(std::max(1, opt.max_batch_tokens)),
      pool_(pool),
      cache_(c, range, opt.n_slots, opt.n_ctx, max_batch_, opt.k_type(), opt.v_type()),
      filled_(static_cast<size_t>(opt.n_slots), 0) {
  for (const auto& l : weights_.layers) {
    LayerFloats d;
    for (LayerTensor r : all_layer_tensors()) {
      if (!is_matrix(r)) d.v[static_cast<size_t>(r)] = to_floats(l[r]);
    }
    lf_.push_back(std::move(d));
  }
  for (int il = range.first; il < range.last; ++il) {
    const int src = c.layer(il).kv_source;
    if (src >= 0 && !range.contains(src)) {
      throw InvalidArgument("layer " + std::to_string(il) + " reads the KV cache of layer " + std::to_string(src) +
                            ", which this stage (layers " + std::to_string(range.first) + "-" +
                            std::to_string(range.last - 1) + ") does not hold: keep them in one stage");
    }
    const int64_t per_slot = c.layer(il).mixer == Mixer::DeltaNet ? c.layer(il).delta.state_floats() : 0;
    const int64_t conv = c.layer(il).mixer == Mixer::DeltaNet ? c.layer(il).delta.conv_state_floats() : 0;
    delta_state_.emplace_back(static_cast<size_t>(per_slot * opt.n_slots), 0.0f);
    conv_state_.emplace_back(static_cast<size_t>(conv * opt.n_slots), 0.0f);
    recurrent_ = recurrent_ || per_slot > 0;
  }
  output_norm_ = to_floats(weights_.output_norm);
  per_layer_proj_norm_ = to_floats(weights_.per_layer_proj_norm);
  rope_freqs_ = to_floats(weights_.rope_freqs);
  for (int il = range.first; il < range.last; ++il) {
    const RopeParams p = layer_rope(c.layer(il), rope_freqs_.empty() ? nullptr : rope_freqs_.data());
    const auto same = [&](const RopeParams& q) {
      return q.n_rot == p.n_rot && q.freq_factors == p.freq_factors && q.base == p.base &&
             q.freq_scale == p.freq_scale && q.mode == p.mode && q.ext_factor == p.ext_factor &&
             q.attn_factor == p.attn_factor && q.corr_dims[0] == p.corr_dims[0] && q.corr_dims[1] == p.corr_dims[1];
    };
    const auto it = std::find_if(ropes_.begin(), ropes_.end(), same);
    layer_rope_.push_back(static_cast<int>(it - ropes_.begin()));
    if (it == ropes_.end()) ropes_.push_back(p);
  }
}

MatmulArgs CpuStage::product(const TensorView& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                             int64_t y_stride) const {
  MatmulArgs a;
  a.type = w.type;
  a.w = w.data;
  a.row_bytes = w.row_bytes();
  a.n_rows = w.ne[1];
  a.n = w.ne[0];
  a.x = x;
  a.x_stride = x_stride;
  a.n_tokens = n_tokens;
  a.y = y;
  a.y_stride = y_stride;
  return a;
}

void CpuStage::for_tokens(int n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n < 4) {
    fn(0, n);
  } else {
    pool_.parallel_for(n, fn);
  }
}

void CpuStage::validate(const Batch& b) {
  const int n = b.n_tokens();
  if (n == 0) throw InvalidArgument("forward: empty batch");
  if (b.slot.size() != b.pos.size() || b.logits.size() != b.pos.size()) {
    throw InvalidArgument("forward: batch fields pos/slot/logits differ in length");
  }
  if (first_) {
    if (b.tokens.size() != b.pos.size()) throw InvalidArgument("forward: batch needs one token per position");
    for (int32_t t : b.tokens) {
      if (t < 0 || t >= cfg_.n_vocab) {
        throw InvalidArgument("forward: token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                              std::to_string(cfg_.n_vocab) + ")");
      }
    }
  } else if (cfg_.per_layer_input > 0 && b.tokens.size() != b.pos.size()) {
    throw InvalidArgument("forward: the model's per-layer inputs need the batch's token ids on every stage");
  } else if (b.hidden == nullptr) {
    throw InvalidArgument("forward: a non-first stage needs the previous stage's activations");
  }
  std::vector<int32_t> filled = filled_;
  for (int i = 0; i < n; ++i) {
    const int32_t s = b.slot[static_cast<size_t>(i)], p = b.pos[static_cast<size_t>(i)];
    if (s < 0 || s >= cache_.n_slots()) {
      throw InvalidArgument("forward: slot " + std::to_string(s) + " is outside [0, " +
                            std::to_string(cache_.n_slots()) + ")");
    }
    if (p < 0 || p >= cache_.n_ctx()) {
      throw InvalidArgument("forward: position " + std::to_string(p) + " is outside the context of " +
                            std::to_string(cache_.n_ctx()) + " tokens");
    }
    if (recurrent_ && p != 0 && p != filled[static_cast<size_t>(s)]) {
      // A recurrent state holds one history: a sequence continues where it stopped or restarts.
      throw InvalidArgument("forward: position " + std::to_string(p) + " of slot " + std::to_string(s) +
                            " neither continues its sequence (at " + std::to_string(filled[static_cast<size_t>(s)]) +
                            ") nor restarts it (at 0): the model's recurrent layers cannot rewind");
    }
    if (p > filled[static_cast<size_t>(s)]) {
      throw InvalidArgument("forward: position " + std::to_string(p) + " of slot " + std::to_string(s) +
                            " leaves a gap (the cache holds " + std::to_string(filled[static_cast<size_t>(s)]) +
                            " positions)");
    }
    filled[static_cast<size_t>(s)] = p + 1;
  }
  filled_ = filled;
}

void CpuStage::embed(const Batch& b) {
  const int n = b.n_tokens();
  const int64_t E = cfg_.n_embd;
  if (!first_) {
    std::copy(b.hidden, b.hidden + n * E, x_.begin());
    return;
  }
  const TensorView& te = *weights_.token_embd;
  for_tokens(n, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* x = x_.data() + t * E;
      dequantize_row(te.type, te.row(b.tokens[static_cast<size_t>(t)]), x, E);
      if (cfg_.embd_scale != 1.0f) {
        for (int64_t i = 0; i < E; ++i) x[i] *= cfg_.embd_scale;
      }
    }
  });
}

void CpuStage::per_layer_inputs(const Batch& b) {
  const int64_t T = b.n_tokens(), E = cfg_.n_embd, P = cfg_.per_layer_input, LP = int64_t{cfg_.n_layer} * P;
  // proj = per_layer_model_proj (token_embd[id] * sqrt(E)) / sqrt(E): the scales cancel.
  pl_tmp_.resize(static_cast<size_t>(T * E));
  const TensorView& te = *weights_.token_embd;
  for (int64_t t = 0; t < T; ++t) dequantize_row(te.type, te.row(b.tokens[static_cast<size_t>(t)]), pl_tmp_.data() + t * E, E);
  inp_pl_.resize(static_cast<size_t>(T * LP));
  const MatmulArgs m = product(*weights_.per_layer_model_proj, pl_tmp_.data(), E, T, inp_pl_.data(), LP);
  pool_.run([&](int ith, int nth) { matmul(m, ith, nth); });
  const TensorView& pe = *weights_.per_layer_token_embd;
  pl_tmp_.resize(static_cast<size_t>(T * LP));
  for (int64_t t = 0; t < T; ++t) dequantize_row(pe.type, pe.row(b.tokens[static_cast<size_t>(t)]), pl_tmp_.data() + t * LP, LP);
  per_layer_combine(inp_pl_.data(), pl_tmp_.data(), per_layer_proj_norm_.data(), T, cfg_.n_layer, static_cast<int>(P),
                    cfg_.rms_eps);
}

void CpuStage::forward(const Batch& b, std::vector<float>& out) {
  validate(b);
  const int n = b.n_tokens();
  if (n <= max_batch_) {
    forward_chunk(b, out);
    return;
  }
  out.clear();
  std::vector<float> part;
  for (int c0 = 0; c0 < n; c0 += max_batch_) {
    const int c1 = std::min(n, c0 + max_batch_);
    Batch c;
    if (!b.tokens.empty()) c.tokens.assign(b.tokens.begin() + c0, b.tokens.begin() + c1);
    c.hidden = b.hidden != nullptr ? b.hidden + static_cast<size_t>(c0) * cfg_.n_embd : nullptr;
    c.pos.assign(b.pos.begin() + c0, b.pos.begin() + c1);
    c.slot.assign(b.slot.begin() + c0, b.slot.begin() + c1);
    c.logits.assign(b.logits.begin() + c0, b.logits.begin() + c1);
    forward_chunk(c, part);
    out.insert(out.end(), part.begin(), part.end());
  }
}

void CpuStage::forward_hidden(const Batch& b, std::vector<float>& out) {
  if (!last_) throw InvalidArgument("embeddings: the stage has no final norm (it is not the last stage)");
  struct Flag {
    bool& f;
    explicit Flag(bool& x) : f(x) { f = true; }
    ~Flag() { f = false; }
  } flag(hidden_out_);
  forward(b, out);
}

void CpuStage::forward_chunk(const Batch& b, std::vector<float>& out) {
  const size_t T = static_cast<size_t>(b.n_tokens());
  x_.resize(T * static_cast<size_t>(cfg_.n_embd));
  h_.resize(x_.size());
  tmp_.resize(x_.size());
  q_.resize(T * static_cast<size_t>(cfg_.q_dim()));
  k_.resize(T * static_cast<size_t>(cfg_.k_dim()));
  v_.resize(T * static_cast<size_t>(cfg_.v_dim()));
  att_.resize(T * static_cast<size_t>(cfg_.n_head) * static_cast<size_t>(cfg_.head_dim_v));
  gate_.resize(T * static_cast<size_t>(std::max(cfg_.n_ff, cfg_.q_dim())));
  up_.resize(gate_.size());
  n_kv_.resize(T);
  kp_.resize(T);
  vp_.resize(T);
  // Angles per distinct rope setting: cs_[r][t][n_rot].
  const size_t R = static_cast<size_t>(cfg_.n_rot);
  cs_.resize(ropes_.size() * T * R);
  for (size_t r = 0; r < ropes_.size(); ++r) {
    for (size_t t = 0; t < T; ++t) rope_angles(ropes_[r], b.pos[t], cs_.data() + (r * T + t) * R);
  }

  embed(b);
  if (cfg_.per_layer_input > 0 && weights_.range.size() > 0) per_layer_inputs(b);
  for (int il = weights_.range.first; il < weights_.range.last; ++il) run_layer(il, b);
  if (last_) {
    output(b, out);
  } else {
    out.assign(x_.begin(), x_.end());
  }
}

void CpuStage::norm_rows(float* x, const float* w, int T, int64_t n) {
  for_tokens(T, [&](int64_t t0, int64_t t1) { rmsnorm_rows(x + t0 * n, w, t1 - t0, n, cfg_.rms_eps, x + t0 * n); });
}

void CpuStage::output(const Batch& b, std::vector<float>& out) {
  const int64_t E = cfg_.n_embd, V = cfg_.n_vocab;
  const int T = b.n_tokens();
  int n_out = 0;
  for (int t = 0; t < T; ++t) {
    if (b.logits[static_cast<size_t>(t)] == 0) continue;
    rmsnorm(x_.data() + t * E, output_norm_.data(), E, cfg_.rms_eps, h_.data() + n_out * E);
    ++n_out;
  }
  if (hidden_out_) {  // forward_hidden(): the normed rows are the result
    out.assign(h_.begin(), h_.begin() + static_cast<int64_t>(n_out) * E);
    return;
  }
  out.resize(static_cast<size_t>(n_out) * static_cast<size_t>(V));
  if (n_out == 0) return;
  const MatmulArgs ml = product(*weights_.output, h_.data(), E, n_out, out.data(), V);
  pool_.run([&](int ith, int nth) { matmul(ml, ith, nth); });
  if (cfg_.logit_softcap > 0.0f) {
    const float cap = cfg_.logit_softcap;
    for (float& l : out) l = cap * std::tanh(l / cap);
  }
}

}  // namespace pipellm

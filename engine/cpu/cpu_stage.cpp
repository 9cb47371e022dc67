#include "engine/cpu/cpu_stage.h"

#include <algorithm>
#include <cmath>

#include "engine/model/layer_rope.h"
#include "engine/util/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/delta_net.h"
#include "kernels/cpu/gated_activation.h"
#include "kernels/cpu/hybrid_ops.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cpu/moe_route.h"

namespace pipellm {

namespace {

std::vector<float> to_floats(const TensorView* t) {
  if (t == nullptr) return {};
  std::vector<float> v(static_cast<size_t>(t->n_elements()));
  dequantize_row(t->type, t->data, v.data(), t->n_elements());
  return v;
}

void add_rows(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
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
      cache_(c, range, opt.n_slots, opt.n_ctx, max_batch_, opt.kv_type),
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

void CpuStage::per_layer_block(int il, int T) {
  const LayerWeights& w = weights_.layer(il);
  const LayerFloats& d = lf_[static_cast<size_t>(il - weights_.range.first)];
  const int64_t E = cfg_.n_embd, P = cfg_.per_layer_input, LP = int64_t{cfg_.n_layer} * P;
  pl_tmp_.resize(static_cast<size_t>(T * P));
  const MatmulArgs mg = product(*w[LayerTensor::InpGate], x_.data(), E, T, pl_tmp_.data(), P);
  pool_.run([&](int ith, int nth) { matmul(mg, ith, nth); });
  for (int64_t t = 0; t < T; ++t) {
    // gelu(g) * inp_pl: the gated activation with the per-layer input as the "up" half.
    float* g = pl_tmp_.data() + t * P;
    gated_activation(GatedAct::GeluTanh, g, inp_pl_.data() + t * LP + int64_t{il} * P, P, g);
  }
  const MatmulArgs mp = product(*w[LayerTensor::Proj], pl_tmp_.data(), P, T, tmp_.data(), E);
  pool_.run([&](int ith, int nth) { matmul(mp, ith, nth); });
  norm_rows(tmp_.data(), d.ptr(LayerTensor::PostNorm), T, E);
  for (int64_t i = 0; i < T * E; ++i) x_[static_cast<size_t>(i)] += tmp_[static_cast<size_t>(i)];
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

void CpuStage::run_layer(int il, const Batch& b) {
  const LayerSpec& s = cfg_.layer(il);
  const LayerFloats& d = lf_[static_cast<size_t>(il - weights_.range.first)];
  const int T = b.n_tokens();
  const int64_t E = cfg_.n_embd;

  switch (s.mixer) {
    case Mixer::Attention: attention_block(il, b); break;
    case Mixer::DeltaNet: delta_block(il, b); break;
  }
  if (s.post_attn_norm) norm_rows(tmp_.data(), d.ptr(LayerTensor::PostAttnNorm), T, E);
  for_tokens(T, [&](int64_t t0, int64_t t1) {
    add_rows(x_.data() + t0 * E, tmp_.data() + t0 * E, (t1 - t0) * E);
    rmsnorm_rows(x_.data() + t0 * E, d.ptr(LayerTensor::FfnNorm), t1 - t0, E, cfg_.rms_eps, h_.data() + t0 * E);
  });
  switch (s.ffn) {
    case FfnKind::Dense: dense_ffn(il, T); break;
    case FfnKind::Moe: moe_ffn(il, T); break;
  }
  if (s.post_ffn_norm) norm_rows(tmp_.data(), d.ptr(LayerTensor::PostFfnNorm), T, E);
  for_tokens(T, [&](int64_t t0, int64_t t1) { add_rows(x_.data() + t0 * E, tmp_.data() + t0 * E, (t1 - t0) * E); });
  if (s.per_layer_input) per_layer_block(il, T);
  if (s.output_scale) {
    const float k = d[LayerTensor::LayerOutputScale][0];
    for (int64_t i = 0; i < T * E; ++i) x_[static_cast<size_t>(i)] *= k;
  }
}

void CpuStage::attention_block(int il, const Batch& b) {
  const LayerWeights& w = weights_.layer(il);
  const LayerSpec& s = cfg_.layer(il);
  const size_t local = static_cast<size_t>(il - weights_.range.first);
  const LayerFloats& d = lf_[local];
  const int T = b.n_tokens();
  const int64_t E = cfg_.n_embd, QD = cfg_.q_dim(il), KD = cfg_.k_dim(il), VD = cfg_.v_dim(il);
  const int64_t AD = static_cast<int64_t>(cfg_.n_head) * s.head_dim_v;

  for_tokens(T, [&](int64_t t0, int64_t t1) {
    rmsnorm_rows(x_.data() + t0 * E, d.ptr(LayerTensor::AttnNorm), t1 - t0, E, cfg_.rms_eps, h_.data() + t0 * E);
  });
  if (s.qkv_fused) {
    const int64_t W = QD + KD + VD;
    qkv_.resize(static_cast<size_t>(T * W));
    const MatmulArgs m = product(*w[LayerTensor::Qkv], h_.data(), E, T, qkv_.data(), W);
    pool_.run([&](int ith, int nth) { matmul(m, ith, nth); });
    for (int64_t t = 0; t < T; ++t) {
      const float* r = qkv_.data() + t * W;
      std::copy(r, r + QD, q_.data() + t * QD);
      std::copy(r + QD, r + QD + KD, k_.data() + t * KD);
      std::copy(r + QD + KD, r + W, v_.data() + t * VD);
    }
  } else {
    if (s.gated_q) qkv_.resize(static_cast<size_t>(T * 2 * QD));
    const MatmulArgs mq = s.gated_q ? product(*w[LayerTensor::Q], h_.data(), E, T, qkv_.data(), 2 * QD)
                                    : product(*w[LayerTensor::Q], h_.data(), E, T, q_.data(), QD);
    // Layers reading another layer's cache project only q; a layer without attn_v reuses k.
    const bool own_kv = s.kv_source < 0;
    const MatmulArgs mk = own_kv ? product(*w[LayerTensor::K], h_.data(), E, T, k_.data(), KD) : MatmulArgs{};
    const MatmulArgs mv = own_kv && !s.k_eq_v ? product(*w[LayerTensor::V], h_.data(), E, T, v_.data(), VD) : MatmulArgs{};
    pool_.run([&](int ith, int nth) {
      matmul(mq, ith, nth);
      if (own_kv) matmul(mk, ith, nth);
      if (own_kv && !s.k_eq_v) matmul(mv, ith, nth);
    });
    if (own_kv && s.k_eq_v) std::copy(k_.begin(), k_.begin() + T * KD, v_.begin());
    if (s.gated_q) {
      // Rows hold [q | gate] per head: q to q_, the gates to gate_.
      split_gated_q(qkv_.data(), q_.data(), gate_.data(), T, cfg_.n_head, s.head_dim);
    }
  }
  const RopeParams& rope = ropes_[static_cast<size_t>(layer_rope_[local])];
  const int kv_layer = s.kv_source >= 0 ? s.kv_source : il;  // whose cache the queries read
  const float* cs_layer = cs_.data() + static_cast<size_t>(layer_rope_[local]) * T * cfg_.n_rot;  // rows of n_rot
  for_tokens(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* q = q_.data() + t * QD;
      float* k = k_.data() + t * KD;
      float* v = v_.data() + t * VD;
      if (s.qkv_bias) {
        add_rows(q, d.ptr(LayerTensor::QBias), QD);
        add_rows(k, d.ptr(LayerTensor::KBias), KD);
        add_rows(v, d.ptr(LayerTensor::VBias), VD);
      }
      const bool own_kv = s.kv_source < 0;
      if (s.qk_norm) {
        rmsnorm_rows(q, d.ptr(LayerTensor::QNorm), cfg_.n_head, s.head_dim, cfg_.rms_eps, q);
        if (own_kv) rmsnorm_rows(k, d.ptr(LayerTensor::KNorm), s.n_head_kv, s.head_dim, cfg_.rms_eps, k);
      }
      if (s.v_norm && own_kv) rmsnorm_rows(v, nullptr, s.n_head_kv, s.head_dim_v, cfg_.rms_eps, v);
      const float* cs = cs_layer + t * cfg_.n_rot;
      rope_apply(rope, cs, q, cfg_.n_head, s.head_dim);
      const size_t ts = static_cast<size_t>(t);
      if (own_kv) {
        rope_apply(rope, cs, k, s.n_head_kv, s.head_dim);
        cache_.store_k(il, b.slot[ts], b.pos[ts], k);
        cache_.store_v(il, b.slot[ts], b.pos[ts], v);
      }
      n_kv_[ts] = b.pos[ts] + 1;
      kp_[ts] = cache_.k(kv_layer, b.slot[ts]);
      vp_[ts] = cache_.v(kv_layer, b.slot[ts]);
    }
  });

  AttentionArgs aa;
  aa.n_tokens = T;
  aa.n_head = cfg_.n_head;
  aa.n_head_kv = s.n_head_kv;
  aa.head_dim = s.head_dim;
  aa.head_dim_v = s.head_dim_v;
  aa.scale = s.attn_scale;
  aa.q = q_.data();
  aa.q_stride = QD;
  aa.out = att_.data();
  aa.out_stride = AD;
  aa.n_kv = n_kv_.data();
  aa.k = kp_.data();
  aa.v = vp_.data();
  aa.k_row_bytes = cache_.k_row_bytes(kv_layer);
  aa.v_row_bytes = cache_.v_row_bytes(kv_layer);
  aa.kv_type = cache_.type();
  aa.window = s.window;
  aa.ring = cache_.rows(kv_layer) < cache_.n_ctx() ? cache_.rows(kv_layer) : 0;
  aa.sinks = d.ptr(LayerTensor::Sinks);
  pool_.run([&](int ith, int nth) { attention(aa, ith, nth); });
  if (s.gated_q) sigmoid_mul(att_.data(), gate_.data(), T * AD);

  const MatmulArgs mo = product(*w[LayerTensor::O], att_.data(), AD, T, tmp_.data(), E);
  pool_.run([&](int ith, int nth) { matmul(mo, ith, nth); });
  if (s.o_bias) {
    for (int64_t t = 0; t < T; ++t) add_rows(tmp_.data() + t * E, d.ptr(LayerTensor::OBias), E);
  }
}

void CpuStage::delta_block(int il, const Batch& b) {
  const LayerWeights& w = weights_.layer(il);
  const LayerSpec& s = cfg_.layer(il);
  const size_t local = static_cast<size_t>(il - weights_.range.first);
  const LayerFloats& d = lf_[local];
  const DeltaNetShape& sh = s.delta;
  const int T = b.n_tokens();
  const int64_t E = cfg_.n_embd, C = sh.channels(), HV = sh.n_v_heads, S = sh.head, VS = HV * S;
  const int64_t KS = int64_t{sh.n_k_heads} * S;

  for_tokens(T, [&](int64_t t0, int64_t t1) {
    rmsnorm_rows(x_.data() + t0 * E, d.ptr(LayerTensor::AttnNorm), t1 - t0, E, cfg_.rms_eps, h_.data() + t0 * E);
  });
  qkv_.resize(static_cast<size_t>(T * C));
  dz_.resize(static_cast<size_t>(T * VS));
  dg_.resize(static_cast<size_t>(T * HV));
  dbeta_.resize(dg_.size());
  dout_.resize(dz_.size());
  const MatmulArgs mqkv = product(*w[LayerTensor::Qkv], h_.data(), E, T, qkv_.data(), C);
  const MatmulArgs mz = product(*w[LayerTensor::AttnGate], h_.data(), E, T, dz_.data(), VS);
  const MatmulArgs ma = product(*w[LayerTensor::SsmAlpha], h_.data(), E, T, dg_.data(), HV);
  const MatmulArgs mb = product(*w[LayerTensor::SsmBeta], h_.data(), E, T, dbeta_.data(), HV);
  pool_.run([&](int ith, int nth) {
    matmul(mqkv, ith, nth);
    matmul(mz, ith, nth);
    matmul(ma, ith, nth);
    matmul(mb, ith, nth);
  });
  delta_gates(dg_.data(), dbeta_.data(), d.ptr(LayerTensor::SsmDtBias), d.ptr(LayerTensor::SsmA), T,
              static_cast<int>(HV));

  // The recurrence runs per sequence over its rows in order.
  std::vector<int32_t> rows;
  std::vector<uint8_t> done(static_cast<size_t>(T), 0);
  std::vector<float> gs, bs;
  for (int t0 = 0; t0 < T; ++t0) {
    if (done[static_cast<size_t>(t0)]) continue;
    const int32_t slot = b.slot[static_cast<size_t>(t0)];
    rows.clear();
    for (int t = t0; t < T; ++t) {
      if (b.slot[static_cast<size_t>(t)] == slot) {
        rows.push_back(t);
        done[static_cast<size_t>(t)] = 1;
      }
    }
    const int n = static_cast<int>(rows.size());
    float* conv = conv_state_[local].data() + static_cast<size_t>(slot) * static_cast<size_t>(sh.conv_state_floats());
    float* state = delta_state_[local].data() + static_cast<size_t>(slot) * static_cast<size_t>(sh.state_floats());
    if (b.pos[static_cast<size_t>(t0)] == 0) {
      std::fill(conv, conv + sh.conv_state_floats(), 0.0f);
      std::fill(state, state + sh.state_floats(), 0.0f);
    }
    dx_.resize(static_cast<size_t>(n * C));
    dy_.resize(dx_.size());
    gs.resize(static_cast<size_t>(n * HV));
    bs.resize(gs.size());
    for (int j = 0; j < n; ++j) {
      const int64_t t = rows[static_cast<size_t>(j)];
      std::copy(qkv_.data() + t * C, qkv_.data() + (t + 1) * C, dx_.data() + j * C);
      std::copy(dg_.data() + t * HV, dg_.data() + (t + 1) * HV, gs.data() + j * HV);
      std::copy(dbeta_.data() + t * HV, dbeta_.data() + (t + 1) * HV, bs.data() + j * HV);
    }
    delta_conv(sh, d.ptr(LayerTensor::SsmConv), dx_.data(), C, n, conv, dy_.data(), C);
    // The recurrence's output reuses dx_ (the conv input is no longer needed).
    delta_rule(sh, dy_.data(), dy_.data() + KS, C, dy_.data() + 2 * KS, C, gs.data(), bs.data(), n, cfg_.rms_eps, state,
               dx_.data());
    for (int j = 0; j < n; ++j) {
      const int64_t t = rows[static_cast<size_t>(j)];
      std::copy(dx_.data() + j * VS, dx_.data() + (j + 1) * VS, dout_.data() + t * VS);
    }
  }

  // Gated norm per value head: rms(o) * ssm_norm * silu(z); then the output projection.
  gated_rmsnorm(dout_.data(), dz_.data(), d.ptr(LayerTensor::SsmNorm), T, static_cast<int>(HV), static_cast<int>(S),
                cfg_.rms_eps);
  const MatmulArgs mo = product(*w[LayerTensor::SsmOut], dout_.data(), VS, T, tmp_.data(), E);
  pool_.run([&](int ith, int nth) { matmul(mo, ith, nth); });
}

void CpuStage::dense_ffn(int il, int T) {
  const LayerWeights& w = weights_.layer(il);
  const LayerSpec& s = cfg_.layer(il);
  const int64_t E = cfg_.n_embd, F = s.ffn == FfnKind::Moe ? s.n_ff_dense : s.n_ff;
  if (s.gate_up_fused) {
    // One product into [T][2F] rows (gate then up), activated into gate_ rows of F.
    qkv_.resize(static_cast<size_t>(T * 2 * F));
    const MatmulArgs m = product(*w[LayerTensor::GateUp], h_.data(), E, T, qkv_.data(), 2 * F);
    pool_.run([&](int ith, int nth) { matmul(m, ith, nth); });
    for (int64_t t = 0; t < T; ++t) {
      const float* r = qkv_.data() + t * 2 * F;
      gated_activation(s.act, r, r + F, F, gate_.data() + t * F);
    }
  } else {
    const MatmulArgs mg = product(*w[LayerTensor::Gate], h_.data(), E, T, gate_.data(), F);
    const MatmulArgs mu = product(*w[LayerTensor::Up], h_.data(), E, T, up_.data(), F);
    pool_.run([&](int ith, int nth) {
      matmul(mg, ith, nth);
      matmul(mu, ith, nth);
    });
    for_tokens(T, [&](int64_t t0, int64_t t1) {
      gated_activation(s.act, gate_.data() + t0 * F, up_.data() + t0 * F, (t1 - t0) * F, gate_.data() + t0 * F);
    });
  }
  const MatmulArgs md = product(*w[LayerTensor::Down], gate_.data(), F, T, tmp_.data(), E);
  pool_.run([&](int ith, int nth) { matmul(md, ith, nth); });
}

void CpuStage::moe_ffn(int il, int T) {
  const LayerWeights& w = weights_.layer(il);
  const LayerSpec& s = cfg_.layer(il);
  const LayerFloats& d = lf_[static_cast<size_t>(il - weights_.range.first)];
  const int64_t E = cfg_.n_embd, F = s.n_ff, X = s.n_expert, K = s.n_expert_used;

  // gemma4: the dense MLP beside the experts (on h_, the ffn_norm rows) into dense_, and the
  // router's and experts' own inputs from the residual x.
  const float* router_in = h_.data();
  const float* expert_in = h_.data();
  if (s.n_ff_dense > 0) {
    dense_ffn(il, T);
    norm_rows(tmp_.data(), d.ptr(LayerTensor::PostFfwNorm1), T, E);
    dense_.assign(tmp_.begin(), tmp_.begin() + T * E);
    const float* rs = d.ptr(LayerTensor::RouterScale);
    const float inv = 1.0f / std::sqrt(static_cast<float>(E));
    pl_tmp_.resize(static_cast<size_t>(T * E));
    for (int64_t t = 0; t < T; ++t) {
      float* r = pl_tmp_.data() + t * E;
      rmsnorm(x_.data() + t * E, nullptr, E, cfg_.rms_eps, r);
      for (int64_t i = 0; i < E; ++i) r[i] *= inv * rs[i];
      rmsnorm(x_.data() + t * E, d.ptr(LayerTensor::PreFfwNorm2), E, cfg_.rms_eps, h_.data() + t * E);
    }
    router_in = pl_tmp_.data();
  }

  // Route every token.
  router_.resize(static_cast<size_t>(T * X));
  const MatmulArgs mr = product(*w[LayerTensor::Router], router_in, E, T, router_.data(), X);
  pool_.run([&](int ith, int nth) { matmul(mr, ith, nth); });
  route_id_.resize(static_cast<size_t>(T * K));
  route_w_.resize(route_id_.size());
  for (int64_t t = 0; t < T; ++t) {
    float* logits = router_.data() + t * X;
    if (s.router_bias) add_rows(logits, d.ptr(LayerTensor::RouterBias), X);
    moe_route(s.routing, logits, static_cast<int>(X), static_cast<int>(K), route_id_.data() + t * K,
              route_w_.data() + t * K);
  }
  if (const float* scale = d.ptr(LayerTensor::DownExpsScale)) {
    moe_scale_weights(route_w_.data(), route_id_.data(), scale, T * K);
  }

  // Each expert computes the rows of the tokens routed to it, added into tmp_ with their weight.
  std::fill(tmp_.begin(), tmp_.begin() + T * E, 0.0f);
  const auto slice = [](const TensorView& t, int64_t rows_per_expert, int64_t e, int64_t n_in) {
    MatmulArgs a;
    a.type = t.type;
    a.row_bytes = t.row_bytes();
    a.w = t.data + static_cast<size_t>(e * rows_per_expert) * a.row_bytes;
    a.n_rows = rows_per_expert;
    a.n = n_in;
    return a;
  };
  const float* bg = d.ptr(LayerTensor::GateExpsBias);
  const float* bu = d.ptr(LayerTensor::UpExpsBias);
  const float* bd = d.ptr(LayerTensor::DownExpsBias);
  for (int64_t e = 0; e < X; ++e) {
    expert_rows_.clear();
    for (int64_t i = 0; i < T * K; ++i) {
      if (route_id_[static_cast<size_t>(i)] == e) expert_rows_.push_back(static_cast<int32_t>(i));
    }
    const int64_t n = static_cast<int64_t>(expert_rows_.size());
    if (n == 0) continue;
    eh_.resize(static_cast<size_t>(n * E));
    eg_.resize(static_cast<size_t>(n * F));
    eu_.resize(eg_.size());
    ed_.resize(eh_.size());
    for (int64_t j = 0; j < n; ++j) {
      const float* src = expert_in + (expert_rows_[static_cast<size_t>(j)] / K) * E;
      std::copy(src, src + E, eh_.data() + j * E);
    }
    const bool fused = w[LayerTensor::GateUpExps] != nullptr;  // one [gate; up] stack (gemma4)
    if (fused) {
      eu_.resize(static_cast<size_t>(n * 2 * F));
      MatmulArgs m = slice(*w[LayerTensor::GateUpExps], 2 * F, e, E);
      m.x = eh_.data();
      m.x_stride = E;
      m.n_tokens = n;
      m.y = eu_.data();
      m.y_stride = 2 * F;
      pool_.run([&](int ith, int nth) { matmul(m, ith, nth); });
    } else {
      MatmulArgs mg = slice(*w[LayerTensor::GateExps], F, e, E), mu = slice(*w[LayerTensor::UpExps], F, e, E);
      mg.x = mu.x = eh_.data();
      mg.x_stride = mu.x_stride = E;
      mg.n_tokens = mu.n_tokens = n;
      mg.y = eg_.data();
      mu.y = eu_.data();
      mg.y_stride = mu.y_stride = F;
      pool_.run([&](int ith, int nth) {
        matmul(mg, ith, nth);
        matmul(mu, ith, nth);
      });
    }
    for (int64_t j = 0; j < n; ++j) {
      float* g = fused ? eu_.data() + j * 2 * F : eg_.data() + j * F;
      float* u = fused ? g + F : eu_.data() + j * F;
      if (fused) std::copy(g, g + F, eg_.data() + j * F);
      g = eg_.data() + j * F;
      if (bg != nullptr) add_rows(g, bg + e * F, F);
      if (bu != nullptr) add_rows(u, bu + e * F, F);
      gated_activation(s.act, g, u, F, g);
    }
    MatmulArgs md = slice(*w[LayerTensor::DownExps], E, e, F);
    md.x = eg_.data();
    md.x_stride = F;
    md.n_tokens = n;
    md.y = ed_.data();
    md.y_stride = E;
    pool_.run([&](int ith, int nth) { matmul(md, ith, nth); });
    for (int64_t j = 0; j < n; ++j) {
      const int32_t r = expert_rows_[static_cast<size_t>(j)];
      const float wt = route_w_[static_cast<size_t>(r)];
      float* y = tmp_.data() + (r / K) * E;
      const float* o = ed_.data() + j * E;
      for (int64_t i = 0; i < E; ++i) y[i] += wt * (o[i] + (bd != nullptr ? bd[e * E + i] : 0.0f));
    }
  }
  if (s.n_ff_dense > 0) {
    norm_rows(tmp_.data(), d.ptr(LayerTensor::PostFfwNorm2), T, E);
    for (int64_t i = 0; i < T * E; ++i) tmp_[static_cast<size_t>(i)] += dense_[static_cast<size_t>(i)];
  }
  if (s.n_ff_shexp > 0) {
    // The shared expert: every token, scaled by sigmoid(ffn_gate_inp_shexp . h).
    const int64_t FS = s.n_ff_shexp;
    eg_.resize(static_cast<size_t>(T * FS));
    eu_.resize(eg_.size());
    ed_.resize(static_cast<size_t>(T * E));
    const MatmulArgs mg = product(*w[LayerTensor::GateShexp], h_.data(), E, T, eg_.data(), FS);
    const MatmulArgs mu = product(*w[LayerTensor::UpShexp], h_.data(), E, T, eu_.data(), FS);
    pool_.run([&](int ith, int nth) {
      matmul(mg, ith, nth);
      matmul(mu, ith, nth);
    });
    swiglu(eg_.data(), eu_.data(), T * FS, eg_.data());
    const MatmulArgs md = product(*w[LayerTensor::DownShexp], eg_.data(), FS, T, ed_.data(), E);
    pool_.run([&](int ith, int nth) { matmul(md, ith, nth); });
    gate_dot_add(tmp_.data(), ed_.data(), h_.data(), d.ptr(LayerTensor::RouterShexp), T, E);
  }
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

#include "engine/cpu/cpu_stage.h"

#include <algorithm>
#include <cmath>

#include "engine/util/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/swiglu.h"

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
      pool_(pool),
      cache_(c, range, opt.n_slots, opt.n_ctx, opt.kv_type),
      filled_(static_cast<size_t>(opt.n_slots), 0) {
  for (const auto& l : weights_.layers) {
    LayerFloats d;
    d.attn_norm = to_floats(l.attn_norm);
    d.ffn_norm = to_floats(l.ffn_norm);
    d.bq = to_floats(l.bq);
    d.bk = to_floats(l.bk);
    d.bv = to_floats(l.bv);
    d.q_norm = to_floats(l.q_norm);
    d.k_norm = to_floats(l.k_norm);
    lf_.push_back(std::move(d));
  }
  output_norm_ = to_floats(weights_.output_norm);
  rope_freqs_ = to_floats(weights_.rope_freqs);
  rope_.n_rot = c.n_rot;
  rope_.base = c.rope_base;
  rope_.freq_scale = c.rope_freq_scale;
  rope_.freq_factors = rope_freqs_.empty() ? nullptr : rope_freqs_.data();
  rope_.mode = c.rope_type == RopeType::Neox ? RopeMode::Neox : RopeMode::Normal;
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
      dequantize_row(te.type, te.row(b.tokens[static_cast<size_t>(t)]), x_.data() + t * E, E);
    }
  });
}

void CpuStage::forward(const Batch& b, std::vector<float>& out) {
  validate(b);
  const size_t T = static_cast<size_t>(b.n_tokens());
  x_.resize(T * static_cast<size_t>(cfg_.n_embd));
  h_.resize(x_.size());
  tmp_.resize(x_.size());
  q_.resize(T * static_cast<size_t>(cfg_.q_dim()));
  k_.resize(T * static_cast<size_t>(cfg_.k_dim()));
  v_.resize(T * static_cast<size_t>(cfg_.v_dim()));
  att_.resize(T * static_cast<size_t>(cfg_.n_head) * static_cast<size_t>(cfg_.head_dim_v));
  gate_.resize(T * static_cast<size_t>(cfg_.n_ff));
  up_.resize(gate_.size());
  cs_.resize(T * static_cast<size_t>(cfg_.n_rot));
  n_kv_.resize(T);
  kp_.resize(T);
  vp_.resize(T);
  for (size_t t = 0; t < T; ++t) rope_angles(rope_, b.pos[t], cs_.data() + t * static_cast<size_t>(cfg_.n_rot));

  embed(b);
  for (int il = weights_.range.first; il < weights_.range.last; ++il) run_layer(il, b);
  if (last_) {
    output(b, out);
  } else {
    out.assign(x_.begin(), x_.end());
  }
}

void CpuStage::run_layer(int il, const Batch& b) {
  const LayerWeights& w = weights_.layer(il);
  const LayerFloats& d = lf_[static_cast<size_t>(il - weights_.range.first)];
  const int T = b.n_tokens();
  const int64_t E = cfg_.n_embd, QD = cfg_.q_dim(), KD = cfg_.k_dim(), VD = cfg_.v_dim(), F = cfg_.n_ff;
  const int64_t AD = static_cast<int64_t>(cfg_.n_head) * cfg_.head_dim_v;

  // Attention block.
  for_tokens(T, [&](int64_t t0, int64_t t1) {
    rmsnorm_rows(x_.data() + t0 * E, d.attn_norm.data(), t1 - t0, E, cfg_.rms_eps, h_.data() + t0 * E);
  });
  const MatmulArgs mq = product(*w.wq, h_.data(), E, T, q_.data(), QD);
  const MatmulArgs mk = product(*w.wk, h_.data(), E, T, k_.data(), KD);
  const MatmulArgs mv = product(*w.wv, h_.data(), E, T, v_.data(), VD);
  pool_.run([&](int ith, int nth) {
    matmul(mq, ith, nth);
    matmul(mk, ith, nth);
    matmul(mv, ith, nth);
  });
  for_tokens(T, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* q = q_.data() + t * QD;
      float* k = k_.data() + t * KD;
      float* v = v_.data() + t * VD;
      if (!d.bq.empty()) {
        add_rows(q, d.bq.data(), QD);
        add_rows(k, d.bk.data(), KD);
        add_rows(v, d.bv.data(), VD);
      }
      if (!d.q_norm.empty()) {
        rmsnorm_rows(q, d.q_norm.data(), cfg_.n_head, cfg_.head_dim, cfg_.rms_eps, q);
        rmsnorm_rows(k, d.k_norm.data(), cfg_.n_head_kv, cfg_.head_dim, cfg_.rms_eps, k);
      }
      const float* cs = cs_.data() + t * cfg_.n_rot;
      rope_apply(rope_, cs, q, cfg_.n_head, cfg_.head_dim);
      rope_apply(rope_, cs, k, cfg_.n_head_kv, cfg_.head_dim);
      const size_t ts = static_cast<size_t>(t);
      cache_.store_k(il, b.slot[ts], b.pos[ts], k);
      cache_.store_v(il, b.slot[ts], b.pos[ts], v);
      n_kv_[ts] = b.pos[ts] + 1;
      kp_[ts] = cache_.k(il, b.slot[ts]);
      vp_[ts] = cache_.v(il, b.slot[ts]);
    }
  });

  AttentionArgs aa;
  aa.n_tokens = T;
  aa.n_head = cfg_.n_head;
  aa.n_head_kv = cfg_.n_head_kv;
  aa.head_dim = cfg_.head_dim;
  aa.head_dim_v = cfg_.head_dim_v;
  aa.scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
  aa.q = q_.data();
  aa.q_stride = QD;
  aa.out = att_.data();
  aa.out_stride = AD;
  aa.n_kv = n_kv_.data();
  aa.k = kp_.data();
  aa.v = vp_.data();
  aa.k_row_bytes = cache_.k_row_bytes();
  aa.v_row_bytes = cache_.v_row_bytes();
  aa.kv_type = cache_.type();
  pool_.run([&](int ith, int nth) { attention(aa, ith, nth); });

  const MatmulArgs mo = product(*w.wo, att_.data(), AD, T, tmp_.data(), E);
  pool_.run([&](int ith, int nth) { matmul(mo, ith, nth); });

  // Feed-forward block.
  for_tokens(T, [&](int64_t t0, int64_t t1) {
    add_rows(x_.data() + t0 * E, tmp_.data() + t0 * E, (t1 - t0) * E);
    rmsnorm_rows(x_.data() + t0 * E, d.ffn_norm.data(), t1 - t0, E, cfg_.rms_eps, h_.data() + t0 * E);
  });
  const MatmulArgs mg = product(*w.w_gate, h_.data(), E, T, gate_.data(), F);
  const MatmulArgs mu = product(*w.w_up, h_.data(), E, T, up_.data(), F);
  pool_.run([&](int ith, int nth) {
    matmul(mg, ith, nth);
    matmul(mu, ith, nth);
  });
  for_tokens(T, [&](int64_t t0, int64_t t1) {
    swiglu(gate_.data() + t0 * F, up_.data() + t0 * F, (t1 - t0) * F, gate_.data() + t0 * F);
  });
  const MatmulArgs md = product(*w.w_down, gate_.data(), F, T, tmp_.data(), E);
  pool_.run([&](int ith, int nth) { matmul(md, ith, nth); });
  for_tokens(T, [&](int64_t t0, int64_t t1) { add_rows(x_.data() + t0 * E, tmp_.data() + t0 * E, (t1 - t0) * E); });
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
}

}  // namespace pipellm

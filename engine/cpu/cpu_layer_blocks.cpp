// A CPU layer (engine/cpu/cpu_stage.h): run_layer chains the blocks its LayerSpec names:
// attention or Gated DeltaNet mixing, the dense or mixture-of-experts FFN, gemma4's per-layer
// input block. The mixers and FFNs leave their output in tmp_.
#include <algorithm>
#include <cmath>

#include "engine/cpu/cpu_stage.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/delta_net.h"
#include "kernels/cpu/gated_activation.h"
#include "kernels/cpu/hybrid_ops.h"
#include "kernels/cpu/moe_route.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/swiglu.h"

namespace pipellm {

namespace {

void add_rows(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace

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
  aa.k_type = cache_.k_type();
  aa.v_type = cache_.v_type();
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

  // Each expert computes the rows of the tokens routed to it; tmp_ gets the weighted sums.
  ExpertStacks st;
  st.gate = w[LayerTensor::GateExps];
  st.up = w[LayerTensor::UpExps];
  st.gate_up = w[LayerTensor::GateUpExps];  // one [gate; up] stack (gemma4)
  st.down = w[LayerTensor::DownExps];
  st.gate_bias = d.ptr(LayerTensor::GateExpsBias);
  st.up_bias = d.ptr(LayerTensor::UpExpsBias);
  st.down_bias = d.ptr(LayerTensor::DownExpsBias);
  st.act = s.act;
  st.n_embd = E;
  st.n_ff = F;
  st.n_expert = X;
  experts_.run(st, expert_in, route_id_.data(), route_w_.data(), T, K, tmp_.data(), pool_);
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

}  // namespace pipellm

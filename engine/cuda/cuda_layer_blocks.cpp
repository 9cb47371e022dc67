// A CUDA stage's layers (engine/cuda/cuda_stage.h): enqueue_layers chains, per layer, the blocks its
// LayerSpec names: attention (gated q, shared KV, sinks, windows) or Gated DeltaNet mixing, the
// dense or mixture-of-experts FFN (shared expert, gemma4's MLP beside experts), gemma4's per-layer
// input block and output scale. Everything is enqueued on the stage's stream (graph-capturable).
#include <cmath>
#include <functional>

#include "base/error.h"
#include "engine/cuda/cuda_stage.h"
#include "engine/model/layer_rope.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/delta_net.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/hybrid_ops.h"
#include "kernels/cuda/layer_ops.h"
#include "kernels/cuda/mmq.h"
#include "kernels/cuda/moe.h"
#include "kernels/cuda/moe_cache.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"

namespace pipellm::cuda {

void CudaStage::enqueue_layers(int T, int n_keys, bool one_run) {
  if (streamed_) streamed_->begin_pass(stream_.get());
  const bool expert_uploads = host_experts_ && host_experts_->uploads(T);
  if (expert_uploads) host_experts_->begin_uploads(stream_.get());
  const bool row_uploads = cpu_rows_ && !cpu_rows_->cpu_step(T);  // the CPU's rows go to the GPU
  if (row_uploads) cpu_rows_->begin_uploads(stream_.get());
  if (cfg_.per_layer_input > 0 && range_.size() > 0) enqueue_per_layer_inputs(T);
  for (int i = 0; i < range_.size(); ++i) {
    const CudaLayer& l = weights_->layers[static_cast<size_t>(i)];
    const LayerSpec& s = cfg_.layer(range_.first + i);
    if (streamed_) streamed_->before_layer(i, stream_.get());
    if (row_uploads) cpu_rows_->before_layer(i, stream_.get());
    switch (s.mixer) {
      case Mixer::Attention: enqueue_attention(i, l, s, T, n_keys, one_run); break;
      case Mixer::DeltaNet: enqueue_delta_net(i, l, s, T); break;
    }
    product_input(T, x_.get(), cfg_.n_embd, l.vec(LayerTensor::FfnNorm), true);
    switch (s.ffn) {
      case FfnKind::Dense: enqueue_dense_ffn(l, s, T, nullptr); break;
      case FfnKind::Moe: enqueue_moe_ffn(i, l, s, T); break;
    }
    if (s.per_layer_input) enqueue_per_layer_block(i, l, T);
    if (s.output_scale) scale(x_.get(), static_cast<int64_t>(T) * cfg_.n_embd, layer_scale_[static_cast<size_t>(i)], launch());
    if (row_uploads) cpu_rows_->after_layer(i, stream_.get());
    if (streamed_) streamed_->after_layer(i, stream_.get());
  }
  if (row_uploads) cpu_rows_->end_uploads(stream_.get());
  if (expert_uploads) host_experts_->end_uploads(stream_.get());
  if (streamed_) streamed_->end_pass(stream_.get());
}

void CudaStage::add_block_output(int T, const float* bias, const float* norm_w) {
  const int E = cfg_.n_embd;
  residual_add(x_.get(), E, tmp_.get(), E, bias, norm_w, cfg_.rms_eps, T, E, launch());
}

void CudaStage::enqueue_attention(int i, const CudaLayer& l, const LayerSpec& s, int T, int n_keys, bool one_run) {
  const int il = range_.first + i;
  const int E = cfg_.n_embd, Q = cfg_.q_dim(il), K = cfg_.k_dim(il);
  product_input(T, x_.get(), E, l.vec(LayerTensor::AttnNorm), true);
  float *q = q_.get(), *k = k_.get(), *v = v_.get();
  int64_t q_stride = Q, kv_stride = K;
  const bool own_kv = s.kv_source < 0;
  if (s.qkv_fused && !s.gated_q && own_kv && !s.k_eq_v) {
    // One product; q, k and v are column ranges of its rows.
    q_stride = kv_stride = Q + 2 * K;
    product(l[LayerTensor::Qkv], T, qkv_.get(), q_stride, false);
    q = qkv_.get();
    k = q + Q;
    v = k + K;
  } else {
    // q (qwen35: [q | gate] rows, split in two below), then k and v where the layer keeps its own
    // cache (gemma4: V = the raw K for a layer without attn_v); neighbours of one type share a launch.
    std::vector<HostRows::Output> outs = {
        {&l[LayerTensor::Q], s.gated_q ? qkv_.get() : q, s.gated_q ? 2 * Q : Q, false}};
    if (own_kv) {
      outs.push_back({&l[LayerTensor::K], k, K, false});
      if (s.k_eq_v) {
        v = k;
      } else {
        outs.push_back({&l[LayerTensor::V], v, K, false});
      }
    }
    fused_products(l, T, outs);
    if (s.gated_q) split_gated_q(qkv_.get(), q, gq_.get(), T, cfg_.n_head, s.head_dim, launch());
  }

  RopeKvArgs r;
  r.n_tokens = T;
  r.n_head = cfg_.n_head;
  r.n_head_kv = s.n_head_kv;
  r.head_dim = s.head_dim;
  r.q = q;
  r.q_stride = q_stride;
  r.k = own_kv ? k : nullptr;  // without: only q is normed and rotated
  r.v = v;
  r.v_norm = s.v_norm;
  r.kv_stride = kv_stride;
  r.bq = l.vec(LayerTensor::QBias);
  r.bk = l.vec(LayerTensor::KBias);
  r.bv = l.vec(LayerTensor::VBias);
  r.q_norm = l.vec(LayerTensor::QNorm);
  r.k_norm = l.vec(LayerTensor::KNorm);
  r.norm_eps = cfg_.rms_eps;
  r.pos = d_pos_;
  r.slot = d_slot_;
  // The cache written (own K/V) or read (gemma4's KV-sharing layers: the source layer's).
  const size_t kv = static_cast<size_t>(own_kv ? i : s.kv_source - range_.first);
  r.k_cache = k_cache_[kv].get();
  r.v_cache = v_cache_[kv].get();
  r.k_type = opt_.kv_type_k;
  r.v_type = opt_.kv_type_v;
  r.n_ctx = kv_rows_[kv];
  const RopeParams rp = layer_rope(s, weights_->rope_freqs.get());
  r.n_rot = rp.n_rot;
  r.base = rp.base;
  r.freq_scale = rp.freq_scale;
  r.freq_factors = rp.freq_factors;
  r.neox = rp.mode == RopeMode::Neox;
  r.ext_factor = rp.ext_factor;
  r.attn_factor = rp.attn_factor;
  r.corr_dims[0] = rp.corr_dims[0];
  r.corr_dims[1] = rp.corr_dims[1];
  rope_kv_store(r, launch());

  AttentionArgs a;
  a.n_tokens = T;
  a.n_head = cfg_.n_head;
  a.n_head_kv = s.n_head_kv;
  a.head_dim = s.head_dim;
  a.scale = s.attn_scale;
  a.q = q;
  a.q_stride = q_stride;
  a.out = att_.get();
  a.out_stride = Q;
  a.k_cache = r.k_cache;
  a.v_cache = r.v_cache;
  a.k_type = r.k_type;
  a.v_type = r.v_type;
  a.n_ctx = r.n_ctx;
  a.pos = d_pos_;
  a.slot = d_slot_;
  a.window = s.window;
  a.sinks = l.vec(LayerTensor::Sinks);
  a.tensor_cores = opt_.attention_tensor_cores;
  attention_split(n_keys, T, s.n_head_kv, opt_.attention_blocks_per_sm * sms_, &a.n_splits, &a.keys_per_split);
  // A prompt chunk: several of its tokens per tensor-core block share each key and value row read.
  if (one_run) a.tokens_per_block = attention_tokens_per_block(a);
  a.partial = attn_part_.get();
  if (attention_scratch_floats(T, cfg_.n_head, s.head_dim, a.n_splits) > attn_part_floats_)
    throw Error("CUDA stage: attention scratch too small");
  // The output projection's 8-bit input straight from the attention kernel (no conversion pass).
  const CudaMatrix& wo = l[LayerTensor::O];
  // (Not where the CPU multiplies some of wo's rows, nor for mmq's f16 variant: they read the float
  // or f16 rows product_input writes.)
  const bool att_q8 = q8_activations(T) && !f16_mmq(T) && matvec_uses_q8(wo.m.type) && Q % 32 == 0 && !s.gated_q &&
                      !split_rows(l);
  if (att_q8) {
    a.xq = xq_.get();
    a.xds = xds_.get();
  }
  attention(a, launch());
  if (s.gated_q) sigmoid_mul(att_.get(), gq_.get(), static_cast<int64_t>(T) * Q, launch());

  if (!att_q8) product_input(T, att_.get(), Q, nullptr, false);
  if (s.o_bias || s.post_attn_norm) {
    product(wo, T, tmp_.get(), E, false);
    add_block_output(T, l.vec(LayerTensor::OBias), l.vec(LayerTensor::PostAttnNorm));
  } else {
    product(wo, T, x_.get(), E, true);
  }
}

void CudaStage::enqueue_dense_ffn(const CudaLayer& l, const LayerSpec& s, int T, float* out) {
  // Beside experts (gemma4) the dense MLP has its own width.
  const int E = cfg_.n_embd, F = s.ffn == FfnKind::Moe ? s.n_ff_dense : s.n_ff;
  if (s.gate_up_fused) {
    product(l[LayerTensor::GateUp], T, g_.get(), 2 * F, false);
    gated_act(s.act, g_.get(), g_.get() + F, 2 * F, T, F, act_.get(), launch());
  } else {
    gated_products(l, l[LayerTensor::Gate], l[LayerTensor::Up], s.act, T, F);
  }
  product_input(T, act_.get(), F, nullptr, false);
  if (out != nullptr) {
    product(l[LayerTensor::Down], T, out, E, false);
  } else if (s.post_ffn_norm) {
    product(l[LayerTensor::Down], T, tmp_.get(), E, false);
    add_block_output(T, nullptr, l.vec(LayerTensor::PostFfnNorm));
  } else {
    product(l[LayerTensor::Down], T, x_.get(), E, true);
  }
}

void CudaStage::gated_products(const CudaLayer& l, const CudaMatrix& gate, const CudaMatrix& up, GatedAct act, int T,
                               int F) {
  if (use_matvec(T) && gate.m.type == up.m.type && !split_rows(l)) {
    MatvecArgs m = matvec_args(gate.m, MatvecMode::Gated, act_.get(), F);
    m.w2 = up.m;
    m.act = act;
    matvec_rows(m, T);
    return;
  }
  fused_products(l, T, {{&gate, g_.get(), F, false}, {&up, u_.get(), F, false}});
  gated_act(act, g_.get(), u_.get(), F, T, F, act_.get(), launch());
}

void CudaStage::enqueue_moe_ffn(int i, const CudaLayer& l, const LayerSpec& s, int T) {
  const int E = cfg_.n_embd, X = s.n_expert, K = s.n_expert_used, P = T * K;
  const float eps = cfg_.rms_eps;
  // The expert products read rmsnorm(x) * w as float rows in y_ and as 8-bit blocks in xq_/xds_
  // (the fast 8-bit kernels; moe.h).
  const bool q8_rows = E % 32 == 0;
  const auto float_rows = [&](const float* norm_w) {
    NormOutArgs a;
    a.x = x_.get();
    a.x_stride = E;
    a.n_rows = T;
    a.n = E;
    a.w = norm_w;
    a.eps = eps;
    a.y_f32 = y_.get();
    if (q8_rows) {
      a.xq = xq_.get();
      a.xds = xds_.get();
      if (f16_mmq(T) || f16_expert_rows(T)) a.y_f16 = xh_.get();
    }
    rmsnorm_convert(a, launch());
  };
  const bool gemma4 = s.n_ff_dense > 0;
  if (gemma4) {
    // The dense MLP (on the ffn_norm rows prepared by the caller) into dense_ = rms(.) * norm_1;
    // the router reads rms(x) / sqrt(E) * scale, the experts rms(x) * pre_ffw_norm_2.
    enqueue_dense_ffn(l, s, T, tmp_.get());
    PIPELLM_CUDA_CHECK(cudaMemsetAsync(dense_.get(), 0, static_cast<size_t>(T) * E * sizeof(float), stream_.get()));
    residual_add(dense_.get(), E, tmp_.get(), E, nullptr, l.vec(LayerTensor::PostFfwNorm1), eps, T, E, launch());
    product_input(T, x_.get(), E, router_scale_[static_cast<size_t>(i)].get(), true);
    product(l[LayerTensor::Router], T, router_.get(), X, false);
    float_rows(l.vec(LayerTensor::PreFfwNorm2));
  } else {
    // The expert products read float rows and 8-bit blocks; the f16 path only wrote f16 rows.
    if (!q8_activations(T) || !q8_rows) float_rows(l.vec(LayerTensor::FfnNorm));
    product(l[LayerTensor::Router], T, router_.get(), X, false);
  }
  moe_route(s.routing, router_.get(), l.vec(LayerTensor::RouterBias), T, X, K, route_id_.get(), route_w_.get(),
            launch());
  if (const float* scale = l.vec(LayerTensor::DownExpsScale)) moe_scale_weights(route_w_.get(), route_id_.get(), scale, P, launch());
  // The weighted sum of the token's experts into dst (add: dst +=).
  std::function<void(float*, bool)> combine = [&](float* dst, bool add) {
    moe_combine(ed_.get(), route_w_.get(), T, K, E, dst, add, launch());
  };
  if (host_experts_ && host_experts_->holds(i) && host_experts_->uploads(T)) {
    // Experts in host memory, a large step: streamed to the device for this layer (host_experts.h).
    enqueue_device_experts(l, host_experts_->upload(i, stream_.get()), s, T);
    host_experts_->release(i, stream_.get());
  } else if (host_experts_ && host_experts_->holds(i)) {
    // Experts in host memory: the CPU computes the weighted sums (host_experts.h) into host_sum_;
    // with the expert cache, the pairs it holds multiply on the GPU first (weights cache_w_).
    ExpertCache* cache = host_experts_->cache();
    const bool cached = cache != nullptr && cache->slots() > 0;
    if (cached) {
      moe_cache_split(route_id_.get(), route_w_.get(), cache->slot_table(i), X, P, cache_id_.get(), cache_w_.get(),
                      host_id_.get(), launch());
      enqueue_cached_experts(l, cache->matrices(i), s, T);
    }
    host_experts_->enqueue(i, T, y_.get(), route_id_.get(), cached ? host_id_.get() : nullptr, route_w_.get(), d_pos_,
                           host_sum_.get(), stream_.get());
    combine = [&, cached](float* dst, bool add) {
      if (cached) {
        moe_combine(ed_.get(), cache_w_.get(), T, K, E, dst, add, launch());
        residual_add(dst, E, host_sum_.get(), E, nullptr, nullptr, eps, T, E, launch());
      } else if (add) {
        residual_add(dst, E, host_sum_.get(), E, nullptr, nullptr, eps, T, E, launch());
      } else {
        PIPELLM_CUDA_CHECK(cudaMemcpyAsync(dst, host_sum_.get(), static_cast<size_t>(T) * E * sizeof(float),
                                           cudaMemcpyDeviceToDevice, stream_.get()));
      }
    };
  } else if (!enqueue_fused_experts(l, s, T, combine)) {
    enqueue_device_experts(l, l, s, T);
  }
  moe_output(l, s, T, combine);
}

bool CudaStage::enqueue_fused_experts(const CudaLayer& l, const LayerSpec& s, int T,
                                      std::function<void(float*, bool)>& combine) {
  const int K = s.n_expert_used, P = T * K;
  // (Rows of n_embd not whole 8-bit blocks, whose xq_ the step never wrote, fail the supports below.)
  if (!opt_.fuse_expert_decode || groups_experts(l, l, s, T) || !l[LayerTensor::GateExps].present() ||
      !l[LayerTensor::UpExps].present())
    return false;
  MoeGatedArgs g;
  g.gate = expert_args(l[LayerTensor::GateExps], route_id_.get(), P, y_.get(), xq_.get(), xds_.get(), K,
                       l.vec(LayerTensor::GateExpsBias), eg_.get());
  g.up = l[LayerTensor::UpExps].m;
  g.up_expert_bytes = l[LayerTensor::UpExps].expert_bytes;
  g.up_bias = l.vec(LayerTensor::UpExpsBias);
  g.act = s.act;
  g.yq = eq_.get();
  g.yds = eds_.get();
  MoeCombineArgs c;
  c.down = expert_args(l[LayerTensor::DownExps], route_id_.get(), P, eg_.get(), eq_.get(), eds_.get(), 1,
                       l.vec(LayerTensor::DownExpsBias), nullptr);
  c.weights = route_w_.get();
  c.k = K;
  if (!moe_gated_matvec_supports(g) || !moe_matvec_combine_supports(c)) return false;
  moe_gated_matvec(g, launch());
  combine = [this, c](float* dst, bool add) mutable {
    c.out = dst;
    c.add = add;
    moe_matvec_combine(c, launch());
  };
  return true;
}

bool CudaStage::expert_groupable(const CudaMatrix& m, const float* bias) const {
  if (!m.present() || !mmq_supports_experts(m.m, m.expert_bytes)) return false;
  return opt_.group_gptoss_experts || (bias == nullptr && m.m.type != TensorType::MXFP4);
}

bool CudaStage::groups_experts(const CudaLayer& l, const CudaLayer& mats, const LayerSpec& s, int T) const {
  return mmq_ && T * s.n_expert_used >= kGroupedPairsPerExpert * s.n_expert &&
         (expert_groupable(mats[LayerTensor::GateUpExps], nullptr) ||
          expert_groupable(mats[LayerTensor::GateExps], l.vec(LayerTensor::GateExpsBias)) ||
          expert_groupable(mats[LayerTensor::DownExps], l.vec(LayerTensor::DownExpsBias)));
}

void CudaStage::enqueue_device_experts(const CudaLayer& l, const CudaLayer& mats, const LayerSpec& s, int T) {
  const int X = s.n_expert, P = T * s.n_expert_used;
  const bool grouped = groups_experts(l, mats, s, T);
  MoeTiles tiles;
  if (grouped) {
    tiles.order = moe_order_.get();
    tiles.tiles = moe_tiles_.get();
    tiles.n_tiles = moe_n_tiles_.get();
    tiles.cols = moe_tile_cols(P, X);
    tiles.max_tiles = moe_max_tiles(P, X, tiles.cols);
    moe_group_pairs(route_id_.get(), P, X, tiles, launch());
  }
  const ExpertProduct product = [&](LayerTensor w, const float* bias, const float* x, const int8_t* xq,
                                    const float2* xds, const __half* xh, int x_group, float* y) {
    if (grouped && xq != nullptr && expert_groupable(mats[w], bias)) {
      MmqExpertArgs m;
      m.w = mats[w].m;
      m.expert_bytes = mats[w].expert_bytes;
      m.tiles = tiles;
      m.n_pairs = P;
      m.xq = xq;
      m.xds = xds;
      m.xh = xh;
      m.x_group = x_group;
      m.y = y;
      m.y_stride = mats[w].m.n_out;
      m.tuning = opt_.mmq_tuning;
      mmq_experts(m, launch());
      if (bias != nullptr) moe_add_bias(y, bias, route_id_.get(), P, mats[w].m.n_out, launch());
      return;
    }
    expert_matvec(mats[w], route_id_.get(), P, x, xq, xds, x_group, bias, y);
  };
  expert_ffn(l, mats, s, T, product, /*bias_in_products=*/true);
}

void CudaStage::expert_ffn(const CudaLayer& l, const CudaLayer& mats, const LayerSpec& s, int T,
                           const ExpertProduct& product, bool bias_in_products) {
  const int E = cfg_.n_embd, F = s.n_ff, K = s.n_expert_used, P = T * K;
  const bool q8_rows = E % 32 == 0;
  const int8_t* hq = q8_rows ? xq_.get() : nullptr;
  const float2* hds = q8_rows ? xds_.get() : nullptr;
  const bool f16 = f16_expert_rows(T);
  const __half* hh = q8_rows && f16 ? xh_.get() : nullptr;
  const float* bias_g = l.vec(LayerTensor::GateExpsBias);
  const float* bias_u = l.vec(LayerTensor::UpExpsBias);
  const float* bias_d = l.vec(LayerTensor::DownExpsBias);
  const auto in_product = [&](const float* b) { return bias_in_products ? b : nullptr; };
  float* act = eg_.get();
  if (mats[LayerTensor::GateUpExps].present()) {
    // One [gate; up] stack: rows of 2F, activated into eu_.
    product(LayerTensor::GateUpExps, nullptr, y_.get(), hq, hds, hh, K, eg_.get());
    gated_act(s.act, eg_.get(), eg_.get() + F, 2 * F, P, F, eu_.get(), launch());
    act = eu_.get();
  } else {
    product(LayerTensor::GateExps, in_product(bias_g), y_.get(), hq, hds, hh, K, eg_.get());
    product(LayerTensor::UpExps, in_product(bias_u), y_.get(), hq, hds, hh, K, eu_.get());
    // Biases the products did not add go by each pair's real expert (route_id_).
    moe_gated_act(s.act, eg_.get(), eu_.get(), bias_in_products ? nullptr : bias_g, bias_in_products ? nullptr : bias_u,
                  route_id_.get(), P, F, launch());
  }
  const bool q8 = quantize_pair_rows(act, P, F, f16);
  product(LayerTensor::DownExps, in_product(bias_d), act, q8 ? eq_.get() : nullptr, q8 ? eds_.get() : nullptr,
          q8 && f16 ? eh_.get() : nullptr, 1, ed_.get());
  if (!bias_in_products && bias_d != nullptr) moe_add_bias(ed_.get(), bias_d, route_id_.get(), P, E, launch());
}

MoeMatvecArgs CudaStage::expert_args(const CudaMatrix& w, const int32_t* ids, int n_pairs, const float* x,
                                     const int8_t* xq, const float2* xds, int x_group, const float* bias,
                                     float* y) const {
  MoeMatvecArgs m;
  m.w = w.m;
  m.expert_bytes = w.expert_bytes;
  m.ids = ids;
  m.n_pairs = n_pairs;
  m.x = x;
  m.xq = xq;
  m.xds = xds;
  m.x_group = x_group;
  m.bias = bias;
  m.y = y;
  return m;
}

void CudaStage::expert_matvec(const CudaMatrix& w, const int32_t* ids, int n_pairs, const float* x, const int8_t* xq,
                              const float2* xds, int x_group, const float* bias, float* y) {
  moe_matvec(expert_args(w, ids, n_pairs, x, xq, xds, x_group, bias, y), launch());
}

bool CudaStage::quantize_pair_rows(const float* rows, int P, int F, bool f16) {
  if (F % 32 != 0) return false;
  NormOutArgs a;
  a.x = rows;
  a.x_stride = F;
  a.n_rows = P;
  a.n = F;
  a.normalize = false;
  a.xq = eq_.get();
  a.xds = eds_.get();
  if (f16) a.y_f16 = eh_.get();
  rmsnorm_convert(a, launch());
  return true;
}

void CudaStage::enqueue_cached_experts(const CudaLayer& l, const CudaLayer& mats, const LayerSpec& s, int T) {
  const int P = T * s.n_expert_used;
  // Products on the cache's slots (cache_id_); the biases go by the real ids (expert_ffn).
  const ExpertProduct product = [&](LayerTensor w, const float*, const float* x, const int8_t* xq, const float2* xds,
                                    const __half*, int x_group, float* y) {
    expert_matvec(mats[w], cache_id_.get(), P, x, xq, xds, x_group, nullptr, y);
  };
  expert_ffn(l, mats, s, T, product, /*bias_in_products=*/false);
}

void CudaStage::moe_output(const CudaLayer& l, const LayerSpec& s, int T, const std::function<void(float*, bool)>& combine) {
  const int E = cfg_.n_embd;
  const float eps = cfg_.rms_eps;
  if (s.n_ff_dense > 0) {
    // f = dense_ + rms(experts) * norm_2, then x += rms(f) * post_ffw_norm.
    combine(tmp_.get(), false);
    residual_add(dense_.get(), E, tmp_.get(), E, nullptr, l.vec(LayerTensor::PostFfwNorm2), eps, T, E, launch());
    residual_add(x_.get(), E, dense_.get(), E, nullptr, l.vec(LayerTensor::PostFfnNorm), eps, T, E, launch());
    return;
  }
  if (s.n_ff_shexp > 0) {
    // The shared expert reads the same ffn_norm rows (still prepared for products); its gate
    // sigmoid(w . h) needs them as floats after the products overwrite y_: kept in dense_.
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(dense_.get(), y_.get(), static_cast<size_t>(T) * E * sizeof(float),
                                       cudaMemcpyDeviceToDevice, stream_.get()));
    combine(x_.get(), true);
    const int FS = s.n_ff_shexp;
    gated_products(l, l[LayerTensor::GateShexp], l[LayerTensor::UpShexp], GatedAct::Silu, T, FS);
    product_input(T, act_.get(), FS, nullptr, false);
    product(l[LayerTensor::DownShexp], T, ed_.get(), E, false);
    gate_dot_add(x_.get(), ed_.get(), dense_.get(), l.vec(LayerTensor::RouterShexp), T, E, launch());
    return;
  }
  if (s.post_ffn_norm) {
    combine(tmp_.get(), false);
    add_block_output(T, nullptr, l.vec(LayerTensor::PostFfnNorm));
  } else {
    combine(x_.get(), true);
  }
}

void CudaStage::enqueue_delta_net(int i, const CudaLayer& l, const LayerSpec& s, int T) {
  const DeltaNetShape& d = s.delta;
  const int E = cfg_.n_embd, C = d.channels(), HV = d.n_v_heads, S = d.head, VS = HV * S, KS = d.n_k_heads * S;
  product_input(T, x_.get(), E, l.vec(LayerTensor::AttnNorm), true);
  fused_products(l, T,
                 {{&l[LayerTensor::Qkv], qkv_.get(), C, false}, {&l[LayerTensor::AttnGate], dz_.get(), VS, false},
                  {&l[LayerTensor::SsmAlpha], dg_.get(), HV, false}, {&l[LayerTensor::SsmBeta], dbeta_.get(), HV, false}});
  delta_gates(dg_.get(), dbeta_.get(), l.vec(LayerTensor::SsmDtBias), l.vec(LayerTensor::SsmA), T, HV, launch());
  DeltaNetArgs a;
  a.shape = d;
  a.n_tokens = T;
  a.pos = d_pos_;
  a.slot = d_slot_;
  a.eps = cfg_.rms_eps;
  delta_conv(a, l.vec(LayerTensor::SsmConv), qkv_.get(), C, conv_state_[static_cast<size_t>(i)].get(), dy_.get(), C,
             launch());
  delta_rule(a, dy_.get(), dy_.get() + KS, C, dy_.get() + 2 * KS, C, dg_.get(), dbeta_.get(),
             delta_state_[static_cast<size_t>(i)].get(), dout_.get(), launch());
  gated_rmsnorm(dout_.get(), dz_.get(), l.vec(LayerTensor::SsmNorm), T, HV, S, cfg_.rms_eps, launch());
  product_input(T, dout_.get(), VS, nullptr, false);
  product(l[LayerTensor::SsmOut], T, x_.get(), E, true);
}

void CudaStage::enqueue_per_layer_inputs(int T) {
  // inp_pl = (rms(per_layer_model_proj x0) * norm + per_layer_token_embd[id] * sqrt(P)) / sqrt(2),
  // x0 = token_embd[id] (the sqrt(E) scale cancels against the projection's 1 / sqrt(E)).
  const int E = cfg_.n_embd, P = cfg_.per_layer_input, LP = cfg_.n_layer * P;
  embed_rows(weights_->token_embd.m, d_tok_, T, pl_x0_.get(), launch());
  product_input(T, pl_x0_.get(), E, nullptr, false);
  product(weights_->per_layer_model_proj, T, inp_pl_.get(), LP, false);
  embed_rows(weights_->per_layer_token_embd.m, d_tok_, T, pl_tok_.get(), launch());
  per_layer_combine(inp_pl_.get(), pl_tok_.get(), weights_->per_layer_proj_norm.get(), T, cfg_.n_layer, P,
                    cfg_.rms_eps, launch());
}

void CudaStage::enqueue_per_layer_block(int i, const CudaLayer& l, int T) {
  // x += rms(proj(gelu(inp_gate x) * inp_pl[layer])) * post_norm
  const int E = cfg_.n_embd, P = cfg_.per_layer_input, LP = cfg_.n_layer * P, il = range_.first + i;
  product_input(T, x_.get(), E, nullptr, false);
  product(l[LayerTensor::InpGate], T, pl_g_.get(), P, false);
  PIPELLM_CUDA_CHECK(cudaMemcpy2DAsync(pl_u_.get(), static_cast<size_t>(P) * sizeof(float),
                                       inp_pl_.get() + static_cast<size_t>(il) * P, static_cast<size_t>(LP) * sizeof(float),
                                       static_cast<size_t>(P) * sizeof(float), static_cast<size_t>(T),
                                       cudaMemcpyDeviceToDevice, stream_.get()));
  gated_act(GatedAct::GeluTanh, pl_g_.get(), pl_u_.get(), P, T, P, act_.get(), launch());
  product_input(T, act_.get(), P, nullptr, false);
  product(l[LayerTensor::Proj], T, tmp_.get(), E, false);
  add_block_output(T, nullptr, l.vec(LayerTensor::PostNorm));
}

}  // namespace pipellm::cuda

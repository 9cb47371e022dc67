#include "engine/cuda/cuda_stage.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/cuda/product_groups.h"
#include "engine/model/kv_cache.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/layer_ops.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/matvec_quant.h"
#include "kernels/cuda/mmq.h"
#include "kernels/cuda/rmsnorm.h"

namespace pipellm::cuda {
namespace {

// A shared launch's further matrices fit mmq's and the mat-vec's extra segments (product_groups.h).
static_assert(kMaxSharedProducts - 1 <= kMmqMaxExtra, "mmq's extra matrices");
static_assert(kMaxSharedProducts - 1 <= sizeof(MatvecArgs::extra) / sizeof(MatvecSegment), "mat-vec segments");

// Position of s in the chain, or -1 when absent.
int where(const std::vector<SamplerStage>& chain, SamplerStage s) {
  const auto it = std::find(chain.begin(), chain.end(), s);
  return it == chain.end() ? -1 : static_cast<int>(it - chain.begin());
}

// The GPU sampler's filter settings for p's chain (p not greedy) into g; false for an order it
// does not implement: the active filters top_k, top_p, min_p in that order, the temperature
// first or last.
bool device_chain(const SamplerParams& p, SlotSampling& g) {
  const auto& c = p.chain;
  const int k = p.top_k > 0 ? where(c, SamplerStage::TopK) : -1;
  const int tp = p.top_p < 1.0f ? where(c, SamplerStage::TopP) : -1;
  const int mp = p.min_p > 0.0f ? where(c, SamplerStage::MinP) : -1;
  const int t = where(c, SamplerStage::Temperature);
  // The active filters must come in the GPU's order (absent ones are skipped).
  std::vector<int> order;
  for (int i : {k, tp, mp})
    if (i >= 0) order.push_back(i);
  const int first_scaled = std::min(tp < 0 ? 1 << 20 : tp, mp < 0 ? 1 << 20 : mp);
  const int last_filter = order.empty() ? -1 : order.back();
  const bool t_first = t >= 0 && t < first_scaled, t_last = t > last_filter;
  if (!std::is_sorted(order.begin(), order.end()) || t < 0 || !(t_first || t_last)) return false;
  g.temperature = p.temperature;
  g.top_k = k >= 0 ? p.top_k : 0;
  g.top_p = tp >= 0 ? p.top_p : 1.0f;
  g.min_p = mp >= 0 ? p.min_p : 0.0f;
  g.temperature_last = t_first ? 0 : 1;
  return true;
}

int sm_count(int device) {
  int n = 0;
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return n;
}

}  // namespace

std::vector<bool> local_host_experts(const CudaStageOptions& opt, LayerRange range) {
  std::vector<bool> local(static_cast<size_t>(range.size()), false);
  for (int il = range.first; il < range.last; ++il) {
    if (static_cast<size_t>(il) < opt.host_experts.size()) local[static_cast<size_t>(il - range.first)] = opt.host_experts[static_cast<size_t>(il)];
  }
  return local;
}

bool stage_uses_mmq(const ModelWeights& w, bool last, const CudaStageOptions& opt) {
  const auto ok = [](const TensorView* t) {
    return t == nullptr || mmq_supports(DeviceMatrix{t->type, t->ne[0], t->n_rows(), nullptr});
  };
  bool all = opt.mmq_max_rows > 0;
  for (const LayerWeights& l : w.layers) {
    for (LayerTensor r : all_layer_tensors()) {
      // Experts: grouped per call. Routers (F32: llama-quantize never quantizes them) take the
      // mat-vec at any batch size (product_rows): a few KB per token. Counting them kept every
      // MoE model off mmq, its grouped experts included.
      if (is_matrix(r) && !is_expert_stack(r) && r != LayerTensor::Router) all = all && ok(l[r]);
    }
  }
  return all && (!last || ok(w.output));
}

CudaStage::CudaStage(const ModelConfig& c, const ModelWeights& w, bool first, bool last, const CudaStageOptions& opt)
    : cfg_(c), range_(w.range), first_(first), last_(last), opt_(opt), stream_([&] {
        PIPELLM_CUDA_CHECK(cudaSetDevice(opt.device));
        return Stream();
      }()) {
  for (int il = range_.first; il < range_.last; ++il) {
    const LayerSpec& l = cfg_.layer(il);
    if (l.head_dim != l.head_dim_v) {
      throw Error("CUDA: layer " + std::to_string(il) + ": head_dim " + std::to_string(l.head_dim) + " != head_dim_v " +
                  std::to_string(l.head_dim_v) + " is not supported");
    }
  }
  if (opt_.n_slots < 1 || opt_.n_ctx < 1) throw InvalidArgument("CUDA stage: n_slots and n_ctx must be positive");
  if (opt_.matvec_max_rows < 1 || opt_.matvec_max_rows > kMatvecChunkedRows) {
    throw InvalidArgument("CUDA stage: matvec_max_rows " + std::to_string(opt_.matvec_max_rows) + " outside [1, " +
                          std::to_string(kMatvecChunkedRows) + "]");
  }
  PIPELLM_CUBLAS_CHECK(cublasSetStream(cublas_.get(), stream_.get()));
  cublas_ws_.resize(kCublasWorkspaceBytes);
  PIPELLM_CUBLAS_CHECK(cublasSetWorkspace(cublas_.get(), cublas_ws_.get(), kCublasWorkspaceBytes));
  // Experts kept in host memory are not uploaded (the device sees the layers without them).
  const std::vector<bool> host_local = local_host_experts(opt_, range_);
  const ModelWeights device_w = without_host_experts(w, host_local);
  mmq_ = stage_uses_mmq(device_w, last_, opt_);
  if (opt_.streaming.enabled()) {  // no resident f16 copies when streaming
    if (opt_.streaming.cpu_rows < 0) {
      opt_.streaming.cpu_rows = measure_cpu_rows_share(device_w, opt_.host_threads, &cpu_rows_pcie_gbs_, &cpu_rows_cpu_gbs_);
    }
    streamed_ = std::make_unique<StreamedWeights>(c, device_w, opt_.n_slots, opt_.n_ctx, opt_.streaming,
                                                  opt_.kv_type_k, opt_.kv_type_v);
    weights_ = std::make_unique<CudaWeights>(c, streamed_->resident_view(), false, stream_.get());
    streamed_->install(*weights_);
  } else {
    weights_ = std::make_unique<CudaWeights>(c, device_w, opt_.resident_f16, stream_.get());
  }

  const int64_t kdim = cfg_.k_dim();
  max_tokens_ = std::max(opt_.max_batch_tokens, batch_bucket(opt_.n_slots));
  if (std::find(host_local.begin(), host_local.end(), true) != host_local.end()) {
    host_experts_ = std::make_unique<HostExperts>(c, w, host_local, max_tokens_, opt_.host_threads,
                                                  opt_.expert_cache_bytes, opt_.expert_cache_refresh);
  }
  if (streamed_ && !streamed_->cpu_rows().empty()) {
    cpu_rows_ = std::make_unique<HostRows>(streamed_->cpu_rows(), max_tokens_, opt_.host_threads, cfg_.rms_eps);
    cpu_rows_->bind(*weights_);
  }
  // Sliding-window layers keep a ring of rows (ModelConfig::kv_rows), the others all n_ctx;
  // rows in bytes of the cache types (kv_row_bytes), as the CPU cache lays them out.
  for (const TensorType t : {opt_.kv_type_k, opt_.kv_type_v}) {
    if (t != TensorType::F16 && t != TensorType::Q8_0 && t != TensorType::Q4_0) {
      throw InvalidArgument(std::string("CUDA stage: KV cache type ") + tensor_type_name(t) +
                            " unsupported (f16, q8_0, q4_0)");
    }
  }
  for (int l = 0; l < range_.size(); ++l) {
    const int il = range_.first + l;
    kv_rows_.push_back(cfg_.kv_rows(il, opt_.n_ctx, max_tokens_));
    size_t k_bytes = 0, v_bytes = 0;
    if (kv_rows_.back() > 0) {  // recurrent and KV-sharing layers keep no rows
      check_kv_head_dim(opt_.kv_type_k, cfg_.layer(il).head_dim, "CUDA stage, layer " + std::to_string(il) + " K");
      check_kv_head_dim(opt_.kv_type_v, cfg_.layer(il).head_dim_v, "CUDA stage, layer " + std::to_string(il) + " V");
      const size_t rows = static_cast<size_t>(opt_.n_slots) * static_cast<size_t>(kv_rows_.back());
      k_bytes = rows * kv_row_bytes(opt_.kv_type_k, cfg_.k_dim(il));
      v_bytes = rows * kv_row_bytes(opt_.kv_type_v, cfg_.v_dim(il));
    }
    k_cache_.emplace_back(k_bytes);
    v_cache_.emplace_back(v_bytes);
    PIPELLM_CUDA_CHECK(cudaMemsetAsync(k_cache_.back().get(), 0, k_cache_.back().bytes(), stream_.get()));
    PIPELLM_CUDA_CHECK(cudaMemsetAsync(v_cache_.back().get(), 0, v_cache_.back().bytes(), stream_.get()));
  }
  const size_t T = static_cast<size_t>(max_tokens_);
  const size_t E = cfg_.n_embd, F = cfg_.n_ff, Q = cfg_.q_dim(), K = kdim;
  // The widest product input or fused product row of any layer.
  size_t W = std::max({E, F, Q}), fused_row = 0, delta_vs = 0, delta_heads = 0;
  bool gated_q = false;
  for (int il = range_.first; il < range_.last; ++il) {
    const LayerSpec& l = cfg_.layer(il);
    if (l.qkv_fused) fused_row = std::max(fused_row, Q + 2 * K);
    if (l.gated_q) fused_row = std::max(fused_row, 2 * Q);
    gated_q = gated_q || l.gated_q;
    if (l.mixer == Mixer::DeltaNet) {
      fused_row = std::max(fused_row, static_cast<size_t>(l.delta.channels()));
      delta_vs = std::max(delta_vs, static_cast<size_t>(l.delta.n_v_heads) * l.delta.head);
      delta_heads = std::max(delta_heads, static_cast<size_t>(l.delta.n_v_heads));
    }
  }
  W = std::max(W, delta_vs);
  d_io_.resize(5 * T);
  d_tok_ = d_io_.get();
  d_pos_ = d_io_.get() + T;
  d_slot_ = d_io_.get() + 2 * T;
  d_out_slot_ = d_io_.get() + 3 * T;
  d_out_pos_ = d_io_.get() + 4 * T;
  for (auto& h : h_io_) h = PinnedBuffer<int32_t>(5 * T);
  h_next_ = PinnedBuffer<int32_t>(T);
  h_logprob_ = PinnedBuffer<float>(T);
  d_next_.resize(T);
  d_logprob_.resize(T);
  if (last_) {
    const size_t S = static_cast<size_t>(opt_.n_slots);
    d_sampling_.resize(S);
    slot_logprobs_.assign(S, 0);
    d_counter_.resize(S);
    d_history_.resize(S * static_cast<size_t>(opt_.n_ctx));
    PIPELLM_CUDA_CHECK(cudaMemsetAsync(d_counter_.get(), 0, d_counter_.bytes(), stream_.get()));
    PIPELLM_CUDA_CHECK(cudaMemsetAsync(d_sampling_.get(), 0, d_sampling_.bytes(), stream_.get()));
    host_rows_ = std::make_unique<HostSampledRows>(opt_.n_slots, cfg_.n_vocab);
  }
  x_.resize(T * E);
  y_.resize(T * W);
  q_.resize(T * Q);
  k_.resize(T * K);
  v_.resize(T * K);
  att_.resize(T * Q);
  g_.resize(T * std::max(2 * F, E));  // also the [gate; up] rows of a fused product
  tmp_.resize(T * E);
  if (fused_row > 0) qkv_.resize(T * fused_row);
  if (gated_q) gq_.resize(T * Q);
  if (delta_vs > 0) {
    dz_.resize(T * delta_vs);
    dout_.resize(T * delta_vs);
    dy_.resize(T * fused_row);
    dg_.resize(T * delta_heads);
    dbeta_.resize(T * delta_heads);
  }
  for (int il = range_.first; il < range_.last; ++il) {
    const LayerSpec& l = cfg_.layer(il);
    const size_t S = static_cast<size_t>(opt_.n_slots);
    conv_state_.emplace_back(l.mixer == Mixer::DeltaNet ? S * static_cast<size_t>(l.delta.conv_state_floats()) : 0);
    delta_state_.emplace_back(l.mixer == Mixer::DeltaNet ? S * static_cast<size_t>(l.delta.state_floats()) : 0);
    if (conv_state_.back().bytes() > 0) {
      PIPELLM_CUDA_CHECK(cudaMemsetAsync(conv_state_.back().get(), 0, conv_state_.back().bytes(), stream_.get()));
      PIPELLM_CUDA_CHECK(cudaMemsetAsync(delta_state_.back().get(), 0, delta_state_.back().bytes(), stream_.get()));
    }
    // Host copies of what the kernels take by value, and the router's pre-scaled input weight
    // (gemma4: rms(x) / sqrt(E) * scale is one rmsnorm with weight scale / sqrt(E)).
    const LayerWeights& lw = w.layers[static_cast<size_t>(il - range_.first)];
    float out_scale = 1.0f;
    if (const TensorView* os = lw[LayerTensor::LayerOutputScale]) dequantize_row(os->type, os->data, &out_scale, 1);
    layer_scale_.push_back(out_scale);
    router_scale_.emplace_back();
    if (const TensorView* rs = lw[LayerTensor::RouterScale]) {
      std::vector<float> v(static_cast<size_t>(rs->n_elements()));
      dequantize_row(rs->type, rs->data, v.data(), rs->n_elements());
      for (float& x : v) x /= std::sqrt(static_cast<float>(E));
      router_scale_.back().resize(v.size());
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(router_scale_.back().get(), v.data(), v.size() * sizeof(float),
                                         cudaMemcpyHostToDevice, stream_.get()));
      stream_.synchronize();  // `v` is released below
    }
  }
  if (cfg_.per_layer_input > 0) {
    const size_t LP = static_cast<size_t>(cfg_.n_layer) * static_cast<size_t>(cfg_.per_layer_input);
    inp_pl_.resize(T * LP);
    pl_tok_.resize(T * LP);
    pl_x0_.resize(T * E);
    pl_g_.resize(T * static_cast<size_t>(cfg_.per_layer_input));
    pl_u_.resize(pl_g_.size());
  }
  if (cfg_.has_moe()) {
    const size_t P = T * static_cast<size_t>(cfg_.max_expert_used());  // (token, expert) pairs
    size_t n_expert = 0;
    for (const LayerSpec& l : cfg_.layers) n_expert = std::max(n_expert, static_cast<size_t>(l.n_expert));
    router_.resize(T * n_expert);
    route_id_.resize(P);
    route_w_.resize(P);
    // Grouped expert products (mmq_experts): the pairs' order and the tiles, sized for the
    // narrowest tiles (the most of them).
    moe_order_.resize(P);
    moe_tiles_.resize(static_cast<size_t>(moe_max_tiles(static_cast<int>(P), static_cast<int>(n_expert), 8)));
    moe_n_tiles_.resize(1);
    eg_.resize(P * 2 * F);  // also [gate; up] rows of a fused expert stack
    eu_.resize(P * F);
    eq_.resize(P * F);
    eds_.resize(P * F / 32 + 1);
    if (f16_expert_rows_from(opt_, max_tokens_)) eh_.resize(P * F);  // f16 pair rows
    ed_.resize(P * E);
    dense_.resize(T * E);
    if (host_experts_) {
      host_sum_.resize(T * E);
      if (host_experts_->cache() != nullptr) {
        cache_w_.resize(P);
        cache_id_.resize(P);
        host_id_.resize(P);
      }
    }
  }
  u_.resize(T * F);
  act_.resize(T * F);
  xq_.resize(T * W);
  xds_.resize(T * W / 32 + 1);
  xh_.resize(T * W);
  if (last_) logits_.resize(static_cast<size_t>(logits_rows(opt_.n_slots, max_tokens_)) * static_cast<size_t>(cfg_.n_vocab));
  // Products beyond the mat-vec and mmq sizes dequantize each matrix into wh_, a slice of rows at
  // a time (no resident copies).
  wh_.resize(static_cast<size_t>(dequant_buffer_elems(opt_, mmq_, max_tokens_, weights_->max_matrix_elems)));
  sms_ = sm_count(opt_.device);
  attn_part_floats_ = attention_scratch_max(cfg_, range_, opt_.n_ctx, max_tokens_, opt_.attention_blocks_per_sm * sms_);
  attn_part_.resize(static_cast<size_t>(attn_part_floats_));
  stream_.synchronize();
}

CudaStage::~CudaStage() {
  graphs_.clear();
  if (stream_.get()) cudaStreamSynchronize(stream_.get());
}

int CudaStage::batch_bucket(int n) {
  int b = 1;
  while (b < n) b *= 2;
  return b;
}

int CudaStage::context_bucket(int max_pos) const {
  int c = 512;
  while (c < max_pos + 1) c *= 2;
  return std::min(c, opt_.n_ctx);
}

void CudaStage::validate(const Batch& b, bool need_hidden) const {
  const int T = b.n_tokens();
  if (static_cast<int>(b.slot.size()) != T || static_cast<int>(b.logits.size()) != T)
    throw InvalidArgument("batch: slot, logits and pos counts differ");
  // gemma4's per-layer inputs are computed from the token ids on every stage.
  if ((first_ || last_ || cfg_.per_layer_input > 0) && static_cast<int>(b.tokens.size()) != T)
    throw InvalidArgument("batch: token and pos counts differ");
  if (need_hidden && b.hidden == nullptr && T > 0) throw InvalidArgument("batch: a non-first stage needs hidden rows");
  for (int i = 0; i < T; ++i) {
    if (first_ && (b.tokens[i] < 0 || b.tokens[i] >= cfg_.n_vocab))
      throw InvalidArgument("batch: token " + std::to_string(b.tokens[i]) + " out of range [0, " +
                            std::to_string(cfg_.n_vocab) + ")");
    if (b.pos[i] < 0 || b.pos[i] >= opt_.n_ctx)
      throw InvalidArgument("batch: position " + std::to_string(b.pos[i]) + " out of range [0, " +
                            std::to_string(opt_.n_ctx) + ")");
    if (b.slot[i] < 0 || b.slot[i] >= opt_.n_slots)
      throw InvalidArgument("batch: slot " + std::to_string(b.slot[i]) + " out of range [0, " +
                            std::to_string(opt_.n_slots) + ")");
  }
}

void CudaStage::upload_step(const Batch& b, int c0, int n, int padded) {
  const int T = max_tokens_;
  // The ring slot's previous copy has run once its event has (steps do not wait otherwise).
  const int k = io_next_;
  io_next_ = (io_next_ + 1) % kIoRing;
  io_done_[k].synchronize();
  int32_t* h = h_io_[k].get();
  int n_out = 0;
  for (int i = 0; i < padded; ++i) {
    const bool real = i < n;
    const size_t j = static_cast<size_t>(c0 + i);
    h[i] = real && !b.tokens.empty() ? b.tokens[j] : 0;
    h[T + i] = real ? b.pos[j] : -1;
    h[2 * T + i] = real ? b.slot[j] : 0;
    if (real && b.logits[j]) {
      h[3 * T + n_out] = b.slot[j];
      h[4 * T + n_out] = b.pos[j];
      ++n_out;
    }
  }
  // Five segments in one copy (the unused tail of each segment is harmless).
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(d_io_.get(), h, 5 * static_cast<size_t>(T) * sizeof(int32_t),
                                     cudaMemcpyHostToDevice, stream_.get()));
  io_done_[k].record(stream_.get());
}

void CudaStage::product_input(int T, const float* x, int64_t n, const float* norm_w, bool normalize) {
  NormOutArgs a;
  a.x = x;
  a.x_stride = n;
  a.n_rows = T;
  a.n = n;
  a.normalize = normalize;
  a.w = norm_w;
  a.eps = cfg_.rms_eps;
  if (q8_activations(T)) {
    a.y_f32 = y_.get();
    a.xq = xq_.get();
    a.xds = xds_.get();
    if (f16_mmq(T)) a.y_f16 = xh_.get();
  } else {
    a.y_f16 = xh_.get();
  }
  rmsnorm_convert(a, launch());
}

void CudaStage::matvec_rows(const MatvecArgs& a, int T) {
  // Up to kMatvecMaxRows activation rows per launch; each launch reads the weights once.
  const int64_t n_in = a.w.n_in;
  for (int c0 = 0; c0 < T; c0 += kMatvecMaxRows) {
    MatvecArgs c = a;
    c.float_split = opt_.float_matvec_split;
    c.flat_items = opt_.matvec_flat_items;
    c.n_rows = std::min(kMatvecMaxRows, T - c0);
    c.x = a.x + c0 * n_in;
    c.xq = a.xq + c0 * n_in;
    c.xds = a.xds + c0 * (n_in / 32);
    c.y = a.y + c0 * a.y_stride;
    for (int e = 0; e < a.n_extra; ++e) c.extra[e].y = a.extra[e].y + c0 * a.extra[e].y_stride;
    matvec(c, launch());
  }
}

void CudaStage::product(const CudaMatrix& w, int T, float* y, int64_t y_stride, bool add) {
  if (cpu_rows_) {
    products({{&w, y, y_stride, add}}, T);
  } else {
    product_rows(w, T, y, y_stride, add);  // the common case builds no list
  }
}

void CudaStage::products(const std::vector<HostRows::Output>& outs, int T) {
  for (const HostRows::Output& o : outs) product_rows(*o.m, T, o.y, o.y_stride, o.add);
  // Streamed matrices whose last rows stay with the CPU (host_rows.h): those rows' columns of y,
  // one host function for all the products of this input.
  if (cpu_rows_) {
    cpu_rows_->enqueue(
        outs, T, y_.get(),
        [&](const CudaMatrix& bottom, float* out, const HostRows::Output& o) {
          product_rows(bottom, T, out, o.y_stride, o.add);
        },
        stream_.get());
  }
}

void CudaStage::fused_products(const CudaLayer& l, int T, const std::vector<HostRows::Output>& outs) {
  if (split_rows(l)) {
    products(outs, T);
    return;
  }
  std::vector<ProductKey> keys;
  for (const HostRows::Output& o : outs) keys.push_back({o.m->m.type, o.m->m.n_in, o.add});
  for (size_t i = 0; i < outs.size();) {
    const HostRows::Output& a = outs[i];
    const DeviceMatrix& w = a.m->m;
    const bool mv = use_matvec(T) && matvec_uses_q8(w.type);
    const size_t j = shared_launch_end(keys, i, mv || shares_mmq(T, w));  // outs[i, j) share a launch
    if (j - i == 1) {
      product(*a.m, T, a.y, a.y_stride, a.add);
    } else if (mv) {
      MatvecArgs m = matvec_args(w, MatvecMode::Store, a.y, a.y_stride);
      for (size_t k = i + 1; k < j; ++k) m.extra[m.n_extra++] = {outs[k].m->m, outs[k].y, outs[k].y_stride};
      matvec_rows(m, T);
    } else {
      MmqArgs x = mmq_args(*a.m, T, a.y, a.y_stride, false);
      for (size_t k = i + 1; k < j; ++k) x.extra[x.n_extra++] = {outs[k].m->m, outs[k].y, outs[k].y_stride};
      mmq(x, launch());
    }
    i = j;
  }
}

int64_t CudaStage::attention_scratch_max(const ModelConfig& c, LayerRange range, int n_ctx, int max_tokens,
                                         int target_blocks) {
  int64_t floats = 0;
  for (int t = 1; t <= max_tokens; t = t < max_tokens ? std::min(max_tokens, t * 2) : max_tokens + 1) {
    for (int il = range.first; il < range.last; ++il) {  // layers may differ in KV heads
      int s = 1, kps = 0;
      attention_split(n_ctx, t, c.layer(il).n_head_kv, target_blocks, &s, &kps);
      floats = std::max(floats, attention_scratch_floats(t, c.n_head, c.head_dim, s));
    }
  }
  return floats;
}

MatvecArgs CudaStage::matvec_args(const DeviceMatrix& w, MatvecMode mode, float* y, int64_t y_stride) const {
  MatvecArgs a;
  a.w = w;
  a.mode = mode;
  a.x = y_.get();
  a.xq = xq_.get();
  a.xds = xds_.get();
  a.y = y;
  a.y_stride = y_stride;
  return a;
}

MmqArgs CudaStage::mmq_args(const CudaMatrix& w, int T, float* y, int64_t y_stride, bool add) const {
  MmqArgs a;
  a.w = w.m;
  a.n_rows = T;
  a.xq = xq_.get();
  a.xds = xds_.get();
  a.xh = f16_mmq(T) ? xh_.get() : nullptr;
  a.y = y;
  a.y_stride = y_stride;
  a.add = add;
  a.tuning = opt_.mmq_tuning;
  return a;
}

void CudaStage::product_rows(const CudaMatrix& w, int T, float* y, int64_t y_stride, bool add) {
  // The mat-vec: small batches, and a router among mmq's (stage_uses_mmq; it reads the float rows
  // product_input wrote beside the 8-bit ones).
  if (use_matvec(T) || (use_mmq(T) && !mmq_supports(w.m))) {
    matvec_rows(matvec_args(w.m, add ? MatvecMode::Add : MatvecMode::Store, y, y_stride), T);
    return;
  }
  if (use_mmq(T)) {
    mmq(mmq_args(w, T, y, y_stride, add), launch());
    return;
  }
  const float beta = add ? 1.0f : 0.0f;
  if (const __half* wh = w.f16.get()) {
    gemm_f16(cublas_.get(), wh, w.m.n_in, w.m.n_out, xh_.get(), T, y, y_stride, beta);
    return;
  }
  // Slices of rows through wh_: each slice's product fills its columns of y.
  const int64_t slice = dequant_slice_rows(static_cast<int64_t>(wh_.size()), w.m.n_in, w.m.n_out);
  if (slice < 1) {
    throw Error("product: no dequantization buffer for a [" + std::to_string(w.m.n_in) + ", " +
                std::to_string(w.m.n_out) + "] matrix at " + std::to_string(T) + " rows");
  }
  for (int64_t r0 = 0; r0 < w.m.n_out; r0 += slice) {
    const int64_t rows = std::min(slice, w.m.n_out - r0);
    dequantize_f16_rows(w.m, r0, rows, wh_.get(), stream_.get());
    gemm_f16(cublas_.get(), wh_.get(), w.m.n_in, rows, xh_.get(), T, y + r0, y_stride, beta);
  }
}

void CudaStage::enqueue_embed(int T) {
  // The first kernel of a step follows the host-to-device copy of the step's inputs: no PDL.
  embed_rows(weights_->token_embd.m, d_tok_, T, x_.get(), stream_.get());
  if (cfg_.embd_scale != 1.0f) scale(x_.get(), static_cast<int64_t>(T) * cfg_.n_embd, cfg_.embd_scale, launch());
}

void CudaStage::enqueue_logits(int n_out) {
  // Rows to project are the first n_out rows of g_ (gathered by the caller) or of x_ (decode).
  product_input(n_out, g_.get(), cfg_.n_embd, weights_->output_norm.get(), true);
  product(weights_->output, n_out, logits_.get(), cfg_.n_vocab, false);
  enqueue_softcap(n_out);
}

void CudaStage::enqueue_softcap(int n_rows) {
  if (cfg_.logit_softcap > 0.0f) softcap(logits_.get(), cfg_.n_vocab, n_rows, cfg_.n_vocab, cfg_.logit_softcap, launch());
}

void CudaStage::enqueue_sampling(int n_out, const int32_t* row_slot, const int32_t* row_pos) {
  SampleRowsArgs a;
  a.logits = logits_.get();
  a.stride = cfg_.n_vocab;
  a.n_rows = n_out;
  a.n_vocab = cfg_.n_vocab;
  a.row_slot = row_slot;
  a.row_pos = row_pos;
  a.slots = d_sampling_.get();
  a.counter = d_counter_.get();
  a.history = d_history_.get();
  a.n_ctx = opt_.n_ctx;
  a.out = d_next_.get();
  a.logprob = d_logprob_.get();
  sample_rows(a, launch());
}

void CudaStage::enqueue_decode_step(int B, int ctx_bucket) {
  struct Flag {  // PDL for the kernels of this step (see launch())
    bool& f;
    explicit Flag(bool& x) : f(x) { f = true; }
    ~Flag() { f = false; }
  } flag(in_decode_);
  if (first_) enqueue_embed(B);
  enqueue_layers(B, ctx_bucket);
  if (!last_) return;
  record_tokens(d_tok_, d_pos_, d_slot_, B, d_history_.get(), opt_.n_ctx, launch());
  product_input(B, x_.get(), cfg_.n_embd, weights_->output_norm.get(), true);
  product(weights_->output, B, logits_.get(), cfg_.n_vocab, false);
  enqueue_softcap(B);
  enqueue_sampling(B, d_slot_, d_pos_);
}

void CudaStage::enqueue_chunk(const Batch& b, int c0, int T, const float* host_rows) {
  upload_step(b, c0, T, T);
  int n_keys = 1;
  bool one_run = true;  // one slot, consecutive positions
  const size_t first = static_cast<size_t>(c0);
  for (int i = c0; i < c0 + T; ++i) {
    const size_t u = static_cast<size_t>(i);
    n_keys = std::max(n_keys, b.pos[u] + 1);
    one_run = one_run && b.slot[u] == b.slot[first] && b.pos[u] == b.pos[first] + (i - c0);
  }
  if (first_) {
    enqueue_embed(T);
  } else if (host_rows != nullptr) {
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(x_.get(), host_rows, static_cast<size_t>(T) * cfg_.n_embd * sizeof(float),
                                       cudaMemcpyHostToDevice, stream_.get()));
  }
  enqueue_layers(T, n_keys, one_run);
}

int CudaStage::enqueue_logits_rows(const Batch& b, int c0, int T, int* i) {
  const int64_t E = cfg_.n_embd;
  const int cap = logits_rows(opt_.n_slots, max_tokens_);
  int n_out = 0;
  for (; *i < c0 + T && n_out < cap; ++*i) {
    if (!b.logits[static_cast<size_t>(*i)]) continue;
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(g_.get() + n_out * E, x_.get() + (*i - c0) * E, E * sizeof(float),
                                       cudaMemcpyDeviceToDevice, stream_.get()));
    ++n_out;
  }
  if (n_out > 0) enqueue_logits(n_out);
  return n_out;
}

void CudaStage::forward(const Batch& batch, std::vector<float>& out) {
  PIPELLM_CUDA_CHECK(cudaSetDevice(opt_.device));
  validate(batch, !first_);
  const int total = batch.n_tokens();
  const int64_t E = cfg_.n_embd, V = cfg_.n_vocab;
  out.clear();
  for (int c0 = 0; c0 < total; c0 += max_tokens_) {
    const int T = std::min(max_tokens_, total - c0);
    enqueue_chunk(batch, c0, T, first_ ? nullptr : batch.hidden + c0 * E);
    const size_t old = out.size();
    if (!last_) {
      out.resize(old + static_cast<size_t>(T * E));
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.data() + old, x_.get(), T * E * sizeof(float), cudaMemcpyDeviceToHost,
                                         stream_.get()));
    } else {
      // Logits in groups of logits_rows(); each group's copy precedes the next projection on the stream.
      for (int i = c0; i < c0 + T;) {
        const int n_out = enqueue_logits_rows(batch, c0, T, &i);
        if (n_out == 0) break;
        const size_t at = out.size();
        out.resize(at + static_cast<size_t>(n_out) * static_cast<size_t>(V));
        PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.data() + at, logits_.get(), n_out * V * sizeof(float),
                                           cudaMemcpyDeviceToHost, stream_.get()));
        stream_.synchronize();  // out may move when the next group grows it
      }
    }
    stream_.synchronize();
    rethrow_host_errors();
  }
}

void CudaStage::rethrow_host_errors() {
  if (host_experts_) host_experts_->rethrow();
  if (cpu_rows_) cpu_rows_->rethrow();
}

SlotSampling CudaStage::slot_sampling(const SamplingSpec& spec) {
  const SamplerParams p = sampler_params(spec);
  p.validate();
  SlotSampling g;
  g.seed = p.seed;
  g.penalty_last_n = p.penalty_last_n;
  g.repeat_penalty = p.repeat_penalty;
  g.frequency_penalty = p.frequency_penalty;
  g.presence_penalty = p.presence_penalty;
  g.logprobs = spec.logprobs ? 1 : 0;
  if (p.greedy()) return g;  // temperature 0: argmax after penalties
  if (!device_chain(p, g)) {
    throw InvalidArgument("sampling: the GPU sampler applies top_k, top_p, min_p in that order with the temperature "
                          "first or last; this sampler chain is not supported on a GPU");
  }
  return g;
}

bool CudaStage::host_sampled(const SamplingSpec& spec) {
  // Grammar masks are built on the host (engine/runtime/grammar); the device sampler computes
  // the chosen token's log-probability only.
  if (!spec.grammar.empty() || spec.top_logprobs > 0) return true;
  const SamplerParams p = sampler_params(spec);
  SlotSampling g;
  return !p.greedy() && !device_chain(p, g);
}

void CudaStage::start_sequence(int slot, const SamplingSpec& sampling, const std::vector<int32_t>& history) {
  if (!last_) throw InvalidArgument("CUDA stage: start_sequence on a stage without the output head");
  if (slot < 0 || slot >= opt_.n_slots)
    throw InvalidArgument("sampling: slot " + std::to_string(slot) + " outside [0, " + std::to_string(opt_.n_slots) + ")");
  // A host-sampled slot gets neutral device settings (greedy, no penalties, no logprob), which
  // leave its logits rows untouched for the host Sampler.
  const bool on_host = host_sampled(sampling);
  const SlotSampling g = on_host ? SlotSampling{} : slot_sampling(sampling);
  // The device's penalty history is by position: a reused prefix's tokens are still there.
  if (on_host) host_rows_->start(slot, sampling, history);
  else host_rows_->stop(slot);
  PIPELLM_CUDA_CHECK(cudaSetDevice(opt_.device));
  // Pageable source: the copy is staged before the call returns; ordered before the next step.
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(d_sampling_.get() + slot, &g, sizeof(g), cudaMemcpyHostToDevice, stream_.get()));
  PIPELLM_CUDA_CHECK(cudaMemsetAsync(d_counter_.get() + slot, 0, sizeof(uint64_t), stream_.get()));
  slot_logprobs_[static_cast<size_t>(slot)] = g.logprobs ? 1 : 0;
}

ActivationRows CudaStage::input_rows(int n_tokens) {
  if (n_tokens < 0 || n_tokens > max_tokens_)
    throw InvalidArgument("CUDA stage: " + std::to_string(n_tokens) + " input rows exceed the step capacity " +
                          std::to_string(max_tokens_));
  return {x_.get(), MemorySpace::Device, stream_.get()};
}

void CudaStage::rows_to_host(const ActivationRows& rows, float* host, size_t count) {
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(host, rows.data, count * sizeof(float), cudaMemcpyDeviceToHost, stream_.get()));
  stream_.synchronize();
}

void CudaStage::rows_from_host(const float* host, const ActivationRows& rows, size_t count) {
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(rows.data, host, count * sizeof(float), cudaMemcpyHostToDevice, stream_.get()));
  stream_.synchronize();
}

void CudaStage::fetch_tokens(const Batch& b, StepOutput& out) {
  const int n = b.n_outputs();
  bool any = false;
  for (int i = 0; i < b.n_tokens(); ++i) {
    const size_t j = static_cast<size_t>(i);
    if (b.logits[j]) any = any || slot_logprobs_[static_cast<size_t>(b.slot[j])];
  }
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_next_.get(), d_next_.get(), n * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                     stream_.get()));
  if (any) {
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_logprob_.get(), d_logprob_.get(), n * sizeof(float), cudaMemcpyDeviceToHost,
                                       stream_.get()));
  }
  // The host-sampled slots' rows come back in the same sync (no copy when there are none).
  host_rows_->enqueue_copies(b, logits_.get(), stream_.get());
  stream_.synchronize();
  out.tokens.assign(h_next_.get(), h_next_.get() + n);
  if (any) out.logprobs.assign(h_logprob_.get(), h_logprob_.get() + n);
  else out.logprobs.clear();
  host_rows_->apply(b, out);
}

void CudaStage::run_eager(const Batch& b, bool want_logits, StepOutput& out) {
  const int T = b.n_tokens();
  enqueue_chunk(b, 0, T, nullptr);  // non-first stages: the transport wrote the rows into x_
  if (!last_) return;
  record_tokens(d_tok_, d_pos_, d_slot_, T, d_history_.get(), opt_.n_ctx, launch());
  int next = 0;
  const int n_out = enqueue_logits_rows(b, 0, T, &next);
  for (; next < T; ++next) {
    if (b.logits[static_cast<size_t>(next)]) {
      throw InvalidArgument("CUDA stage: a step wants logits for more than " + std::to_string(n_out) +
                            " rows (one per sequence); forward() takes all-logits batches");
    }
  }
  last_rows_ = n_out;
  out.logits.clear();
  if (n_out == 0) {
    out.tokens.clear();
    out.logprobs.clear();
    host_rows_->apply(b, out);  // the host samplers' penalty windows take the step's tokens
    return;
  }
  if (want_logits) {
    out.logits.resize(static_cast<size_t>(n_out) * static_cast<size_t>(cfg_.n_vocab));
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.logits.data(), logits_.get(), out.logits.size() * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_.get()));
  }
  enqueue_sampling(n_out, d_out_slot_, d_out_pos_);
  fetch_tokens(b, out);
}

void CudaStage::step(const Batch& batch, StepOutput& out, bool want_logits) {
  PIPELLM_CUDA_CHECK(cudaSetDevice(opt_.device));  // the runtime may call from another thread
  validate(batch, false);
  const int n = batch.n_tokens();
  if (n > max_tokens_)
    throw InvalidArgument("CUDA stage: a step of " + std::to_string(n) + " tokens exceeds the stage's capacity " +
                          std::to_string(max_tokens_));
  out.tokens.clear();
  if (n == 0) return;
  // A host function's failure in a step that did not wait for its stream (not the tail) shows here;
  // between steps the expert cache may move experts in.
  rethrow_host_errors();
  if (host_experts_) host_experts_->maintain(stream_.get());
  // A decode step (every row wants logits) replays a graph; prefill chunks and logits for the
  // caller run eagerly.
  const bool decode = batch.n_outputs() == n && !want_logits && batch_bucket(n) <= max_tokens_ &&
                      (!last_ || batch_bucket(n) <= logits_rows(opt_.n_slots, max_tokens_));
  if (!decode) {
    run_eager(batch, want_logits, out);
    if (last_) rethrow_host_errors();
    return;
  }
  const int B = batch_bucket(n);
  int max_pos = 0;
  for (int i = 0; i < n; ++i) max_pos = std::max(max_pos, batch.pos[static_cast<size_t>(i)]);
  const int C = context_bucket(max_pos);
  upload_step(batch, 0, n, B);
  if (opt_.use_graphs) {
    auto it = graphs_.find({B, C});
    if (it == graphs_.end()) {
      const uint64_t used_before = device_memory_bytes();  // a graph's size is not queryable: measured
      cudaGraph_t g = nullptr;
      PIPELLM_CUDA_CHECK(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeThreadLocal));
      try {
        enqueue_decode_step(B, C);
      } catch (...) {
        cudaStreamEndCapture(stream_.get(), &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      PIPELLM_CUDA_CHECK(cudaStreamEndCapture(stream_.get(), &g));
      it = graphs_.emplace(std::make_pair(B, C), GraphExec(g)).first;
      const uint64_t used_after = device_memory_bytes();
      if (used_after > used_before) graph_bytes_ += used_after - used_before;
    }
    it->second.launch(stream_.get());
  } else {
    enqueue_decode_step(B, C);
  }
  last_rows_ = B;
  if (last_) {
    fetch_tokens(batch, out);
    rethrow_host_errors();
  }
}

void CudaStage::last_logits(int rows, std::vector<float>& out) const {
  if (rows > last_rows_) throw InvalidArgument("last_logits: more rows than the last step had");
  out.resize(static_cast<size_t>(rows) * static_cast<size_t>(cfg_.n_vocab));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.data(), logits_.get(), out.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                     stream_.get()));
  stream_.synchronize();
}

}  // namespace pipellm::cuda

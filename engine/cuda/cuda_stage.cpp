#include "engine/cuda/cuda_stage.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/util/error.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/matvec_quant.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/swiglu.h"

namespace pipellm::cuda {
namespace {

constexpr size_t kCublasWorkspace = 32u << 20;

bool same_params(const SamplingParams& a, const SamplingParams& b) {
  return a.temperature == b.temperature && a.top_k == b.top_k && a.top_p == b.top_p && a.min_p == b.min_p &&
         a.seed == b.seed && a.temperature_last == b.temperature_last;
}

int sm_count(int device) {
  int n = 0;
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return n;
}

}  // namespace

CudaStage::CudaStage(const ModelConfig& c, const ModelWeights& w, bool first, bool last, const CudaStageOptions& opt)
    : cfg_(c), range_(w.range), first_(first), last_(last), opt_(opt), stream_([&] {
        PIPELLM_CUDA_CHECK(cudaSetDevice(opt.device));
        return Stream();
      }()) {
  if (cfg_.head_dim != cfg_.head_dim_v)
    throw Error("CUDA: head_dim " + std::to_string(cfg_.head_dim) + " != head_dim_v " + std::to_string(cfg_.head_dim_v) +
                " is not supported");
  if (opt_.n_slots < 1 || opt_.n_ctx < 1) throw InvalidArgument("CUDA stage: n_slots and n_ctx must be positive");
  PIPELLM_CUBLAS_CHECK(cublasSetStream(cublas_.get(), stream_.get()));
  cublas_ws_.resize(kCublasWorkspace);
  PIPELLM_CUBLAS_CHECK(cublasSetWorkspace(cublas_.get(), cublas_ws_.get(), kCublasWorkspace));
  if (opt_.streaming.enabled()) {  // no resident f16 copies when streaming
    streamed_ = std::make_unique<StreamedWeights>(c, w, opt_.n_slots, opt_.n_ctx, opt_.streaming);
    weights_ = std::make_unique<CudaWeights>(c, streamed_->resident_view(), false, stream_.get());
    streamed_->install(*weights_);
  } else {
    weights_ = std::make_unique<CudaWeights>(c, w, opt_.resident_f16, stream_.get());
  }

  const int64_t kdim = cfg_.k_dim();
  for (int l = 0; l < range_.size(); ++l) {
    k_cache_.emplace_back(static_cast<size_t>(opt_.n_slots) * opt_.n_ctx * kdim);
    v_cache_.emplace_back(static_cast<size_t>(opt_.n_slots) * opt_.n_ctx * kdim);
    PIPELLM_CUDA_CHECK(cudaMemsetAsync(k_cache_.back().get(), 0, k_cache_.back().bytes(), stream_.get()));
    PIPELLM_CUDA_CHECK(cudaMemsetAsync(v_cache_.back().get(), 0, v_cache_.back().bytes(), stream_.get()));
  }

  max_tokens_ = std::max(opt_.max_batch_tokens, batch_bucket(opt_.n_slots));
  const size_t T = static_cast<size_t>(max_tokens_);
  const size_t E = cfg_.n_embd, F = cfg_.n_ff, Q = cfg_.q_dim(), K = kdim;
  const size_t W = std::max({E, F, Q});
  d_io_.resize(3 * T);
  d_tok_ = d_io_.get();
  d_pos_ = d_io_.get() + T;
  d_slot_ = d_io_.get() + 2 * T;
  h_io_ = PinnedBuffer<int32_t>(3 * T);
  h_next_ = PinnedBuffer<int32_t>(T);
  d_next_.resize(T);
  d_counter_.resize(T);
  PIPELLM_CUDA_CHECK(cudaMemsetAsync(d_counter_.get(), 0, d_counter_.bytes(), stream_.get()));
  x_.resize(T * E);
  y_.resize(T * W);
  q_.resize(T * Q);
  k_.resize(T * K);
  v_.resize(T * K);
  att_.resize(T * Q);
  g_.resize(T * std::max(F, E));
  u_.resize(T * F);
  act_.resize(T * F);
  xq_.resize(T * W);
  xds_.resize(T * W / 32 + 1);
  xh_.resize(T * W);
  if (last_) logits_.resize(T * static_cast<size_t>(cfg_.n_vocab));
  if (!opt_.resident_f16) wh_.resize(static_cast<size_t>(weights_->max_matrix_elems));
  // Attention scratch: the most any (tokens, splits) choice below can ask for.
  const int sms = sm_count(opt_.device);
  for (int t = 1; t <= max_tokens_; t = t < max_tokens_ ? std::min(max_tokens_, t * 2) : max_tokens_ + 1) {
    int s = 1, kps = 0;
    attention_split(opt_.n_ctx, t, cfg_.n_head_kv, 2 * sms, &s, &kps);
    attn_part_floats_ = std::max(attn_part_floats_, attention_scratch_floats(t, cfg_.n_head, cfg_.head_dim, s));
  }
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

void CudaStage::validate(const Batch& b) const {
  const int T = b.n_tokens();
  if (static_cast<int>(b.slot.size()) != T) throw InvalidArgument("batch: slot and pos counts differ");
  if (first_ && static_cast<int>(b.tokens.size()) != T) throw InvalidArgument("batch: token and pos counts differ");
  if (!first_ && b.hidden == nullptr && T > 0) throw InvalidArgument("batch: a non-first stage needs hidden rows");
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

void CudaStage::upload_step(const int32_t* tokens, const int32_t* pos, const int32_t* slots, int n, int padded) {
  const int T = max_tokens_;
  for (int i = 0; i < padded; ++i) {
    const bool real = i < n;
    h_io_[i] = real && tokens ? tokens[i] : 0;
    h_io_[T + i] = real ? pos[i] : -1;
    h_io_[2 * T + i] = real ? slots[i] : 0;
  }
  // Three segments in one copy (the unused tail of each segment is harmless).
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(d_io_.get(), h_io_.get(), 3 * static_cast<size_t>(T) * sizeof(int32_t),
                                     cudaMemcpyHostToDevice, stream_.get()));
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
  if (T <= kMatvecMaxRows) {
    a.y_f32 = y_.get();
    a.xq = xq_.get();
    a.xds = xds_.get();
  } else {
    a.y_f16 = xh_.get();
  }
  rmsnorm_convert(a, launch());
}

void CudaStage::product(const CudaMatrix& w, int T, float* y, int64_t y_stride, bool add) {
  if (T <= kMatvecMaxRows) {
    MatvecArgs a;
    a.w = w.m;
    a.mode = add ? MatvecMode::Add : MatvecMode::Store;
    a.n_rows = T;
    a.x = y_.get();
    a.xq = xq_.get();
    a.xds = xds_.get();
    a.y = y;
    a.y_stride = y_stride;
    matvec(a, launch());
    return;
  }
  const __half* wh = w.f16.get();
  if (wh == nullptr) {
    dequantize_f16(w.m, wh_.get(), stream_.get());
    wh = wh_.get();
  }
  gemm_f16(cublas_.get(), wh, w.m.n_in, w.m.n_out, xh_.get(), T, y, y_stride, add ? 1.0f : 0.0f);
}

void CudaStage::enqueue_embed(int T) {
  // The first kernel of a step follows the host-to-device copy of the step's inputs: no PDL.
  embed_rows(weights_->token_embd.m, d_tok_, T, x_.get(), stream_.get());
}

void CudaStage::enqueue_layers(int T, int n_keys) {
  const int E = cfg_.n_embd, F = cfg_.n_ff, Q = cfg_.q_dim(), K = cfg_.k_dim();
  int sms = 0;
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, opt_.device));
  if (streamed_) streamed_->begin_pass(stream_.get());
  for (int i = 0; i < range_.size(); ++i) {
    const CudaLayer& l = weights_->layers[static_cast<size_t>(i)];
    if (streamed_) streamed_->before_layer(i, stream_.get());
    product_input(T, x_.get(), E, l.attn_norm.get(), true);
    if (T <= kMatvecMaxRows && matvec_uses_q8(l.wq.m.type) && l.wk.m.type == l.wq.m.type) {
      // q and k (and v when it has the same type) in one launch.
      MatvecArgs m;
      m.w = l.wq.m;
      m.n_rows = T;
      m.x = y_.get();
      m.xq = xq_.get();
      m.xds = xds_.get();
      m.y = q_.get();
      m.y_stride = Q;
      m.extra[0] = {l.wk.m, k_.get(), K};
      m.n_extra = 1;
      const bool v_too = l.wv.m.type == l.wq.m.type;
      if (v_too) m.extra[m.n_extra++] = {l.wv.m, v_.get(), K};
      matvec(m, launch());
      if (!v_too) product(l.wv, T, v_.get(), K, false);
    } else {
      product(l.wq, T, q_.get(), Q, false);
      product(l.wk, T, k_.get(), K, false);
      product(l.wv, T, v_.get(), K, false);
    }

    RopeKvArgs r;
    r.n_tokens = T;
    r.n_head = cfg_.n_head;
    r.n_head_kv = cfg_.n_head_kv;
    r.head_dim = cfg_.head_dim;
    r.q = q_.get();
    r.q_stride = Q;
    r.k = k_.get();
    r.v = v_.get();
    r.kv_stride = K;
    r.bq = l.bq.get();
    r.bk = l.bk.get();
    r.bv = l.bv.get();
    r.q_norm = l.q_norm.get();
    r.k_norm = l.k_norm.get();
    r.norm_eps = cfg_.rms_eps;
    r.pos = d_pos_;
    r.slot = d_slot_;
    r.k_cache = k_cache_[static_cast<size_t>(i)].get();
    r.v_cache = v_cache_[static_cast<size_t>(i)].get();
    r.n_ctx = opt_.n_ctx;
    r.n_rot = cfg_.n_rot;
    r.base = cfg_.rope_base;
    r.freq_scale = cfg_.rope_freq_scale;
    r.freq_factors = weights_->rope_freqs.get();
    r.neox = cfg_.rope_type == RopeType::Neox;
    rope_kv_store(r, launch());

    AttentionArgs a;
    a.n_tokens = T;
    a.n_head = cfg_.n_head;
    a.n_head_kv = cfg_.n_head_kv;
    a.head_dim = cfg_.head_dim;
    a.scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
    a.q = q_.get();
    a.q_stride = Q;
    a.out = att_.get();
    a.out_stride = Q;
    a.k_cache = r.k_cache;
    a.v_cache = r.v_cache;
    a.n_ctx = opt_.n_ctx;
    a.pos = d_pos_;
    a.slot = d_slot_;
    attention_split(n_keys, T, cfg_.n_head_kv, 2 * sms, &a.n_splits, &a.keys_per_split);
    a.partial = attn_part_.get();
    if (attention_scratch_floats(T, cfg_.n_head, cfg_.head_dim, a.n_splits) > attn_part_floats_)
      throw Error("CUDA stage: attention scratch too small");
    // The output projection's 8-bit input straight from the attention kernel (no conversion pass).
    const bool att_q8 = T <= kMatvecMaxRows && matvec_uses_q8(l.wo.m.type) && Q % 32 == 0;
    if (att_q8) {
      a.xq = xq_.get();
      a.xds = xds_.get();
    }
    attention(a, launch());

    if (!att_q8) product_input(T, att_.get(), Q, nullptr, false);
    product(l.wo, T, x_.get(), E, true);

    product_input(T, x_.get(), E, l.ffn_norm.get(), true);
    if (T <= kMatvecMaxRows && l.w_gate.m.type == l.w_up.m.type) {
      MatvecArgs m;
      m.w = l.w_gate.m;
      m.w2 = l.w_up.m;
      m.mode = MatvecMode::Swiglu;
      m.n_rows = T;
      m.x = y_.get();
      m.xq = xq_.get();
      m.xds = xds_.get();
      m.y = act_.get();
      m.y_stride = F;
      matvec(m, launch());
    } else {
      product(l.w_gate, T, g_.get(), F, false);
      product(l.w_up, T, u_.get(), F, false);
      swiglu(g_.get(), u_.get(), F, T, F, act_.get(), stream_.get());
    }
    product_input(T, act_.get(), F, nullptr, false);
    product(l.w_down, T, x_.get(), E, true);
    if (streamed_) streamed_->after_layer(i, stream_.get());
  }
  if (streamed_) streamed_->end_pass(stream_.get());
}

void CudaStage::enqueue_logits(int n_out) {
  // Rows to project are the first n_out rows of g_ (gathered by the caller) or of x_ (decode).
  product_input(n_out, g_.get(), cfg_.n_embd, weights_->output_norm.get(), true);
  product(weights_->output, n_out, logits_.get(), cfg_.n_vocab, false);
}

void CudaStage::enqueue_decode_step(int B, int ctx_bucket, const SamplingParams& sp) {
  struct Flag {  // PDL for the kernels of this step (see launch())
    bool& f;
    explicit Flag(bool& x) : f(x) { f = true; }
    ~Flag() { f = false; }
  } flag(in_decode_);
  enqueue_embed(B);
  enqueue_layers(B, ctx_bucket);
  product_input(B, x_.get(), cfg_.n_embd, weights_->output_norm.get(), true);
  product(weights_->output, B, logits_.get(), cfg_.n_vocab, false);
  sample_rows(logits_.get(), cfg_.n_vocab, B, cfg_.n_vocab, sp, d_counter_.get(), d_next_.get(), launch());
}

void CudaStage::forward(const Batch& batch, std::vector<float>& out) {
  validate(batch);
  const int total = batch.n_tokens();
  const int64_t E = cfg_.n_embd, V = cfg_.n_vocab;
  out.clear();
  if (last_) out.reserve(static_cast<size_t>(batch.n_outputs()) * static_cast<size_t>(V));
  else out.reserve(static_cast<size_t>(total) * static_cast<size_t>(E));
  for (int c0 = 0; c0 < total; c0 += max_tokens_) {
    const int T = std::min(max_tokens_, total - c0);
    upload_step(first_ ? batch.tokens.data() + c0 : nullptr, batch.pos.data() + c0, batch.slot.data() + c0, T, T);
    int n_keys = 1;
    for (int i = c0; i < c0 + T; ++i) n_keys = std::max(n_keys, batch.pos[i] + 1);
    if (first_) {
      enqueue_embed(T);
    } else {
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(x_.get(), batch.hidden + c0 * E, T * E * sizeof(float),
                                         cudaMemcpyHostToDevice, stream_.get()));
    }
    enqueue_layers(T, n_keys);
    if (!last_) {
      const size_t old = out.size();
      out.resize(old + static_cast<size_t>(T * E));
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.data() + old, x_.get(), T * E * sizeof(float), cudaMemcpyDeviceToHost,
                                         stream_.get()));
      stream_.synchronize();
      continue;
    }
    int n_out = 0;
    for (int i = c0; i < c0 + T; ++i) {
      if (batch.logits.empty() || !batch.logits[static_cast<size_t>(i)]) continue;
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(g_.get() + n_out * E, x_.get() + (i - c0) * E, E * sizeof(float),
                                         cudaMemcpyDeviceToDevice, stream_.get()));
      ++n_out;
    }
    if (n_out > 0) {
      enqueue_logits(n_out);
      const size_t old = out.size();
      out.resize(old + static_cast<size_t>(n_out) * static_cast<size_t>(V));
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.data() + old, logits_.get(), n_out * V * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_.get()));
    }
    stream_.synchronize();
  }
}

void CudaStage::decode(const int32_t* tokens, const int32_t* pos, const int32_t* slots, int n, int32_t* next,
                       const SamplingParams& sp) {
  if (!first_ || !last_) throw InvalidArgument("CUDA decode: needs a whole-model stage");
  if (n < 1) return;
  const int B = batch_bucket(n);
  if (B > max_tokens_)
    throw InvalidArgument("CUDA decode: " + std::to_string(n) + " sequences exceed the stage's batch capacity " +
                          std::to_string(max_tokens_));
  int max_pos = 0;
  for (int i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= cfg_.n_vocab) throw InvalidArgument("CUDA decode: token out of range");
    if (pos[i] < 0 || pos[i] >= opt_.n_ctx) throw InvalidArgument("CUDA decode: position out of range");
    if (slots[i] < 0 || slots[i] >= opt_.n_slots) throw InvalidArgument("CUDA decode: slot out of range");
    max_pos = std::max(max_pos, pos[i]);
  }
  const int C = context_bucket(max_pos);
  upload_step(tokens, pos, slots, n, B);
  if (opt_.use_graphs) {
    if (!same_params(sp, graph_sp_)) {
      graphs_.clear();
      graph_sp_ = sp;
    }
    auto it = graphs_.find({B, C});
    if (it == graphs_.end()) {
      cudaGraph_t g = nullptr;
      PIPELLM_CUDA_CHECK(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeThreadLocal));
      try {
        enqueue_decode_step(B, C, sp);
      } catch (...) {
        cudaStreamEndCapture(stream_.get(), &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      PIPELLM_CUDA_CHECK(cudaStreamEndCapture(stream_.get(), &g));
      it = graphs_.emplace(std::make_pair(B, C), GraphExec(g)).first;
    }
    it->second.launch(stream_.get());
  } else {
    enqueue_decode_step(B, C, sp);
  }
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(h_next_.get(), d_next_.get(), n * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                     stream_.get()));
  stream_.synchronize();
  for (int i = 0; i < n; ++i) next[i] = h_next_[i];
  last_decode_rows_ = B;
}

void CudaStage::last_decode_logits(int n, std::vector<float>& out) const {
  if (n > last_decode_rows_) throw InvalidArgument("last_decode_logits: more rows than the last step had");
  out.resize(static_cast<size_t>(n) * static_cast<size_t>(cfg_.n_vocab));
  PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out.data(), logits_.get(), out.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                     stream_.get()));
  stream_.synchronize();
}

}  // namespace pipellm::cuda

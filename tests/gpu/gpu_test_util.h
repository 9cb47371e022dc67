// Helpers for the GPU tests: skipping without a GPU, random weight blocks, device round trips.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "base/tensor_type.h"
#include "engine/cuda/cuda_stage.h"
#include "engine/model/stage.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/fp16.h"
#include "tests/unit/model_test_util.h"
#include "kernels/cpu/quantize.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/weight_layout.h"

#define PIPELLM_REQUIRE_GPU()                                                          \
  do {                                                                                 \
    if (::pipellm::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device present"; \
  } while (0)

namespace pipellm::test {

inline std::mt19937_64& rng() {
  static std::mt19937_64 r(std::random_device{}());
  return r;
}

inline float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng()); }

inline std::vector<float> random_floats(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = uniform(lo, hi);
  return v;
}

inline void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Random GGUF blocks of `type` (n_blocks): random quant bits, valid small fp16 scales.
inline std::vector<uint8_t> random_blocks(TensorType type, int64_t n_blocks) {
  const auto& info = tensor_type_info(type);
  std::vector<uint8_t> b(static_cast<size_t>(n_blocks) * info.block_bytes);
  for (auto& x : b) x = static_cast<uint8_t>(rng()());
  const size_t bb = info.block_bytes;
  for (int64_t i = 0; i < n_blocks; ++i) {
    uint8_t* p = b.data() + static_cast<size_t>(i) * bb;
    switch (type) {
      case TensorType::F32: {
        const float v = uniform(-1, 1);
        std::memcpy(p, &v, 4);
        break;
      }
      case TensorType::F16: put_f16(p, uniform(-1, 1)); break;
      case TensorType::BF16: {
        const uint16_t h = f32_to_bf16(uniform(-1, 1));
        std::memcpy(p, &h, 2);
        break;
      }
      case TensorType::Q4_1:
      case TensorType::Q5_1:
      case TensorType::Q4_K:
      case TensorType::Q5_K:
        put_f16(p, uniform(0.001f, 0.05f));
        put_f16(p + 2, uniform(0.001f, 0.05f));
        break;
      case TensorType::Q2_K:
        put_f16(p + 80, uniform(0.001f, 0.05f));
        put_f16(p + 82, uniform(0.001f, 0.05f));
        break;
      case TensorType::Q3_K: put_f16(p + 108, uniform(-0.05f, 0.05f)); break;
      case TensorType::Q6_K: put_f16(p + 208, uniform(-0.01f, 0.01f)); break;
      case TensorType::MXFP4: p[0] = static_cast<uint8_t>(118 + rng()() % 8); break;  // E8M0 scale 2^-10 .. 2^-3
      default: put_f16(p, uniform(-0.05f, 0.05f)); break;  // Q4_0, Q5_0, Q8_0, IQ4_NL, IQ4_XS
    }
  }
  return b;
}

// A matrix uploaded in the device layout, owning its storage.
struct UploadedMatrix {
  cuda::DeviceBuffer<uint8_t> buf;
  cuda::DeviceMatrix m;
};

inline UploadedMatrix upload_matrix(TensorType type, int64_t n_in, int64_t n_out, const std::vector<uint8_t>& blocks) {
  UploadedMatrix u;
  u.m.type = type;
  u.m.n_in = n_in;
  u.m.n_out = n_out;
  std::vector<uint8_t> dev(blocks.size());
  cuda::repack_for_device(type, blocks.data(), u.m.blocks(), dev.data());
  u.buf.resize(dev.size());
  PIPELLM_CUDA_CHECK(cudaMemcpy(u.buf.get(), dev.data(), dev.size(), cudaMemcpyHostToDevice));
  u.m.data = u.buf.get();
  return u;
}

template <class T>
cuda::DeviceBuffer<T> to_device(const std::vector<T>& v) {
  cuda::DeviceBuffer<T> d(v.size());
  PIPELLM_CUDA_CHECK(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <class T>
std::vector<T> to_host(const cuda::DeviceBuffer<T>& d, size_t n) {
  std::vector<T> v(n);
  PIPELLM_CUDA_CHECK(cudaDeviceSynchronize());
  PIPELLM_CUDA_CHECK(cudaMemcpy(v.data(), d.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// Fills a device buffer with NaN bytes so unwritten outputs are caught.
template <class T>
void poison(cuda::DeviceBuffer<T>& d) {
  PIPELLM_CUDA_CHECK(cudaMemset(d.get(), 0xff, d.bytes()));
}

inline double rel_err(const std::vector<float>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

inline const std::vector<TensorType>& cuda_types() {
  static const std::vector<TensorType> t = {TensorType::F32,  TensorType::F16,  TensorType::BF16,  TensorType::Q4_0,
                                            TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,  TensorType::Q8_0,
                                            TensorType::Q2_K, TensorType::Q3_K, TensorType::Q4_K,  TensorType::Q5_K,
                                            TensorType::Q6_K, TensorType::IQ4_NL, TensorType::IQ4_XS};
  return t;
}

// The options the architecture fixture tests open their CUDA models with.
inline cuda::CudaStageOptions fixture_stage_options(bool graphs, int n_slots = 1) {
  cuda::CudaStageOptions opt;
  opt.n_ctx = 256;
  opt.n_slots = n_slots;
  opt.max_batch_tokens = 64;
  opt.use_graphs = graphs;
  return opt;
}

// A stage's forward() and its greedy decode of slot 0 through step(), as the fixture checks
// (tests/arch_fixture_check.h) take them.
inline std::function<void(const Batch&, std::vector<float>&)> forward_fn(Stage& st) {
  return [&st](const Batch& b, std::vector<float>& out) { st.forward(b, out); };
}
inline std::vector<int32_t> decode_step(Stage& st, const std::vector<int32_t>& tok, const std::vector<int32_t>& pos,
                                        const std::vector<int32_t>& slot);
inline std::function<int32_t(int32_t, int32_t)> decode_fn(Stage& st) {
  return [&st](int32_t tok, int32_t pos) { return decode_step(st, {tok}, {pos}, {0})[0]; };
}

// n_seqs sequences (sequence s: the first base + s * extra ids of `tokens`, in slot s) prefilled
// through forward(), then `steps` greedy decode steps of all of them through step(): each step's
// logits rows and ids, for graph-against-eager checks.
struct DecodeTrace {
  std::vector<float> logits;
  std::vector<int32_t> ids;
};
inline DecodeTrace greedy_trace(cuda::CudaStage& st, const std::vector<int32_t>& tokens, int n_seqs, int base, int extra,
                                int steps);

// One decode step through Stage::step, as the runtime takes it: token tok[i] at pos[i] of slot
// slot[i]; returns the sampled next tokens (greedy for slots never started).
inline std::vector<int32_t> decode_step(Stage& st, const std::vector<int32_t>& tok, const std::vector<int32_t>& pos,
                                        const std::vector<int32_t>& slot) {
  Batch b;
  for (size_t i = 0; i < tok.size(); ++i) b.add(tok[i], pos[i], slot[i], true);
  StepOutput out;
  st.step(b, out, false);
  return out.tokens;
}

// A stack of n_expert quantized expert matrices [n_in, n_out] (random rows): the GGUF bytes, and
// on the device each expert repacked alone, as the loader does; m is expert 0.
struct ExpertStack {
  std::vector<uint8_t> gguf;
  size_t row_bytes = 0, expert_bytes = 0;
  cuda::DeviceBuffer<uint8_t> dev;
  cuda::DeviceMatrix m;
};

inline ExpertStack make_stack(TensorType t, int n_expert, int64_t n_in, int64_t n_out) {
  ExpertStack s;
  s.row_bytes = tensor_row_bytes(t, n_in);
  s.expert_bytes = s.row_bytes * static_cast<size_t>(n_out);
  s.gguf.resize(s.expert_bytes * static_cast<size_t>(n_expert));
  for (int64_t r = 0; r < n_expert * n_out; ++r) {
    const auto w = random_floats(static_cast<size_t>(n_in));
    quantize_row(t, w.data(), s.gguf.data() + static_cast<size_t>(r) * s.row_bytes, n_in);
  }
  s.m.type = t;
  s.m.n_in = n_in;
  s.m.n_out = n_out;
  std::vector<uint8_t> host(s.gguf.size());
  for (int e = 0; e < n_expert; ++e)
    cuda::repack_for_device(t, s.gguf.data() + e * s.expert_bytes, s.m.blocks(), host.data() + e * s.expert_bytes);
  s.dev = to_device(host);
  s.m.data = s.dev.get();
  return s;
}

// The CPU's dequantization of n_out rows of n_in elements (GGUF blocks): the reference weights.
inline std::vector<float> cpu_dequant(TensorType t, const std::vector<uint8_t>& blocks, int64_t n_in, int64_t n_out) {
  std::vector<float> w(static_cast<size_t>(n_in * n_out));
  const size_t rb = tensor_row_bytes(t, n_in);
  for (int64_t r = 0; r < n_out; ++r) dequantize_row(t, blocks.data() + r * rb, w.data() + r * n_in, n_in);
  return w;
}

// Activations on the device in both forms the products read: f32 rows and the 8-bit blocks
// rmsnorm_convert makes of them (no normalisation); `decoded` is what the 8-bit form stands for.
struct DeviceActivations {
  cuda::DeviceBuffer<float> x;
  cuda::DeviceBuffer<int8_t> xq;
  cuda::DeviceBuffer<float2> xds;
  std::vector<float> decoded;
};

inline DeviceActivations device_activations(const std::vector<float>& x, int rows, int64_t n_in) {
  DeviceActivations a{to_device(x), cuda::DeviceBuffer<int8_t>(x.size()), cuda::DeviceBuffer<float2>(x.size() / 32), {}};
  cuda::NormOutArgs na;
  na.x = a.x.get();
  na.x_stride = n_in;
  na.n_rows = rows;
  na.n = n_in;
  na.normalize = false;
  na.xq = a.xq.get();
  na.xds = a.xds.get();
  cuda::rmsnorm_convert(na, nullptr);
  const auto hq = to_host(a.xq, a.xq.size());
  const auto hds = to_host(a.xds, a.xds.size());
  a.decoded.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) a.decoded[i] = hds[i / 32].x * static_cast<float>(hq[i]);
  return a;
}

// Bounds of the tensor-core attention (attention_mma.h) against float64, for the tests' inputs
// (q, k, v uniform in [-1, 1], scale 1/sqrt(D)). Its products round Q and the probabilities to
// f16 (unit roundoff u = 2^-11 = 4.9e-4): a score moves by at most u * scale * sum|q k| (a
// fraction of u for these inputs, whose scores stay within a few units), each weight of the
// output by about u, and the denominator, summed from the unrounded weights, by less: about 2u
// at worst for a token's row, 1e-3 (about 2u) relative RMS over the whole output, 3e-3 (6u) for
// one token's row.
constexpr double kTensorCoreAttentionRms = 1e-3;
constexpr double kTensorCoreAttentionToken = 3e-3;

// Attention args for dense q / out rows ([T][H*D]) over a cache of n_ctx rows per slot, scored
// at 1/sqrt(D): the common setup of the attention tests (callers add window, sinks, splits).
inline cuda::AttentionArgs dense_attention_args(int T, int H, int Hkv, int D, const float* q, float* out,
                                                const void* k_cache, const void* v_cache, int n_ctx,
                                                const int32_t* pos, const int32_t* slot) {
  cuda::AttentionArgs a;
  a.n_tokens = T;
  a.n_head = H;
  a.n_head_kv = Hkv;
  a.head_dim = D;
  a.scale = 1.0f / std::sqrt(static_cast<float>(D));
  a.q = q;
  a.q_stride = static_cast<int64_t>(H) * D;
  a.out = out;
  a.out_stride = static_cast<int64_t>(H) * D;
  a.k_cache = k_cache;
  a.v_cache = v_cache;
  a.n_ctx = n_ctx;
  a.pos = pos;
  a.slot = slot;
  return a;
}

// Rope + KV-store args for dense q rows ([T][H*D]) and k/v rows ([T][Hkv*D]): the common setup
// of the rope tests (callers add the cache, positions and rope settings).
inline cuda::RopeKvArgs dense_rope_args(int T, int H, int Hkv, int D, float* q, const float* k, const float* v) {
  cuda::RopeKvArgs a;
  a.n_tokens = T;
  a.n_head = H;
  a.n_head_kv = Hkv;
  a.head_dim = D;
  a.q = q;
  a.q_stride = static_cast<int64_t>(H) * D;
  a.k = k;
  a.v = v;
  a.kv_stride = static_cast<int64_t>(Hkv) * D;
  return a;
}

inline DecodeTrace greedy_trace(cuda::CudaStage& st, const std::vector<int32_t>& tokens, int n_seqs, int base, int extra,
                                int steps) {
  DecodeTrace tr;
  std::vector<float> tmp, step;
  std::vector<int32_t> cur(static_cast<size_t>(n_seqs)), pos(cur.size()), slot(cur.size());
  for (int s = 0; s < n_seqs; ++s) {
    const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + base + extra * s);
    st.forward(Batch::sequence(prompt, 0, s), tmp);
    cur[static_cast<size_t>(s)] = argmax(tmp.data(), tmp.size());
    pos[static_cast<size_t>(s)] = static_cast<int32_t>(prompt.size());
    slot[static_cast<size_t>(s)] = s;
  }
  for (int it = 0; it < steps; ++it) {
    cur = decode_step(st, cur, pos, slot);
    st.last_logits(n_seqs, step);
    tr.logits.insert(tr.logits.end(), step.begin(), step.end());
    tr.ids.insert(tr.ids.end(), cur.begin(), cur.end());
    for (auto& p : pos) ++p;
  }
  return tr;
}

}  // namespace pipellm::test

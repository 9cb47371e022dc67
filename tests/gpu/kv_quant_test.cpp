// Quantized KV caches on the GPU (q8_0, q4_0; K and V apart): rope_kv_store writes the bytes the
// CPU cache writes for the same floats, the split-KV attention over them equals the CPU
// attention over the same bytes (prefill and decode shapes, windows, sinks, every K/V type
// pair), decode under a captured CUDA graph, and the whole CUDA engine against the CPU engine
// with the same cache types.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "engine/cpu/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "engine/model/kv_cache.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/rope.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/random_data.h"
#include "tests/unit/model_test_util.h"

namespace pipellm {
namespace {

const TensorType kTypes[] = {TensorType::F16, TensorType::Q8_0, TensorType::Q4_0};

// Rows whose blocks include the quantizers' awkward cases: zeros, equal magnitudes of both signs
// (Q4_0 takes the first), exact ties of Q4_0's x/d + 8.5, an outlier.
std::vector<float> awkward_rows(int n_rows, int dim, std::mt19937_64& rng) {
  std::vector<float> x = test::normal_vec(static_cast<size_t>(n_rows) * dim, rng, 1.5f);
  for (int r = 0; r < n_rows; ++r) {
    float* row = x.data() + static_cast<size_t>(r) * dim;
    const int b = (r % (dim / 32)) * 32;
    switch (r % 4) {
      case 0:
        for (int j = 0; j < 32; ++j) row[b + j] = 0.0f;
        break;
      case 1:
        row[b + 3] = -4.0f;
        row[b + 20] = 4.0f;
        break;
      case 2:
        for (int j = 0; j < 32; ++j) row[b + j] = static_cast<float>(j - 16) * 0.5f;
        break;
      default: row[b + 7] = 80.0f; break;
    }
  }
  return x;
}

std::vector<uint8_t> host_bytes(const cuda::DeviceBuffer<uint8_t>& d) { return test::to_host(d, d.size()); }

// The CPU attention (kernels/cpu/attention.h) over cache bytes laid out as the GPU's:
// [n_slots][n_ctx] rows, token t of slot[t] at pos[t] seeing rows [0, pos] (or the window).
std::vector<float> cpu_attention(const std::vector<float>& q, int T, int H, int Hkv, int D, int n_ctx, TensorType kt,
                                 TensorType vt, const std::vector<uint8_t>& kc, const std::vector<uint8_t>& vc,
                                 const std::vector<int32_t>& pos, const std::vector<int32_t>& slot, int window,
                                 const float* sinks) {
  const size_t krb = kv_row_bytes(kt, Hkv * D), vrb = kv_row_bytes(vt, Hkv * D);
  std::vector<int32_t> n_kv(static_cast<size_t>(T));
  std::vector<const uint8_t*> kp(static_cast<size_t>(T)), vp(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) {
    n_kv[static_cast<size_t>(t)] = pos[static_cast<size_t>(t)] + 1;  // 0 keys for padding: output 0
    const size_t s = static_cast<size_t>(std::max(0, slot[static_cast<size_t>(t)])) * static_cast<size_t>(n_ctx);
    kp[static_cast<size_t>(t)] = kc.data() + s * krb;
    vp[static_cast<size_t>(t)] = vc.data() + s * vrb;
  }
  std::vector<float> out(static_cast<size_t>(T * H * D), 0.0f);
  AttentionArgs a;
  a.n_tokens = T;
  a.n_head = H;
  a.n_head_kv = Hkv;
  a.head_dim = a.head_dim_v = D;
  a.scale = 1.0f / std::sqrt(static_cast<float>(D));
  a.q = q.data();
  a.q_stride = H * D;
  a.out = out.data();
  a.out_stride = H * D;
  a.n_kv = n_kv.data();
  a.k = kp.data();
  a.v = vp.data();
  a.k_row_bytes = krb;
  a.v_row_bytes = vrb;
  a.k_type = kt;
  a.v_type = vt;
  a.window = window;
  a.sinks = sinks;
  attention(a, 0, 1);
  return out;
}

std::vector<double> as_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// Store: the bytes of every row rope_kv_store writes equal KvCache's store of the same floats
// (no RoPE, norms or biases here, so the kernel quantizes exactly its inputs).
TEST(CudaKvQuant, StoreWritesTheCpuCacheBytes) {
  PIPELLM_REQUIRE_GPU();
  std::mt19937_64 rng(5);
  for (const int D : {64, 128, 256}) {
    for (const TensorType kt : kTypes) {
      for (const TensorType vt : kTypes) {
        const int T = 8, H = 4, Hkv = 2, n_ctx = 12, n_slots = 2;
        const std::vector<int32_t> pos = {0, 5, 11, 3, 7, -1, 1, 16},
                                   slot = {0, 0, 1, 1, 1, 0, 1, 0};  // 16: ring row 4
        const std::vector<float> k = awkward_rows(T * Hkv, D, rng), v = awkward_rows(T * Hkv, D, rng);
        const std::vector<float> q = test::normal_vec(static_cast<size_t>(T * H * D), rng);
        auto dq = test::to_device(q), dk = test::to_device(k), dv = test::to_device(v);
        auto dpos = test::to_device(pos), dslot = test::to_device(slot);
        const size_t krb = kv_row_bytes(kt, Hkv * D), vrb = kv_row_bytes(vt, Hkv * D);
        cuda::DeviceBuffer<uint8_t> kc(krb * n_slots * n_ctx), vc(vrb * n_slots * n_ctx);
        test::poison(kc);
        test::poison(vc);
        cuda::RopeKvArgs a = test::dense_rope_args(T, H, Hkv, D, dq.get(), dk.get(), dv.get());
        a.pos = dpos.get();
        a.slot = dslot.get();
        a.k_cache = kc.get();
        a.v_cache = vc.get();
        a.k_type = kt;
        a.v_type = vt;
        a.n_ctx = n_ctx;
        a.n_rot = 0;
        cuda::rope_kv_store(a, nullptr);
        const std::vector<uint8_t> gk = host_bytes(kc), gv = host_bytes(vc);
        for (int t = 0; t < T; ++t) {
          if (pos[static_cast<size_t>(t)] < 0) continue;
          const size_t row =
              static_cast<size_t>(slot[static_cast<size_t>(t)] * n_ctx + pos[static_cast<size_t>(t)] % n_ctx);
          std::vector<uint8_t> ck(krb), cv(vrb);
          kv_store_row(kt, k.data() + static_cast<size_t>(t) * Hkv * D, Hkv * D, ck.data());
          kv_store_row(vt, v.data() + static_cast<size_t>(t) * Hkv * D, Hkv * D, cv.data());
          EXPECT_EQ(0, std::memcmp(gk.data() + row * krb, ck.data(), krb))
              << "K " << tensor_type_name(kt) << " D " << D << " token " << t;
          EXPECT_EQ(0, std::memcmp(gv.data() + row * vrb, cv.data(), vrb))
              << "V " << tensor_type_name(vt) << " D " << D << " token " << t;
        }
      }
    }
  }
}

TEST(CudaKvQuant, StoreRefusesOtherTypesAndPartialBlocks) {
  PIPELLM_REQUIRE_GPU();
  cuda::RopeKvArgs a;
  a.n_tokens = 1;
  a.n_head = a.n_head_kv = 1;
  a.head_dim = 48;
  a.n_rot = 0;
  float dummy = 0;
  a.k = &dummy;
  a.k_type = TensorType::Q8_0;
  EXPECT_THROW(cuda::rope_kv_store(a, nullptr), Error);
  a.head_dim = 64;
  a.k_type = TensorType::F32;
  EXPECT_THROW(cuda::rope_kv_store(a, nullptr), Error);
}

// Attention: the GPU kernel over quantized bytes equals the CPU kernel over the same bytes.
struct AttnCase {
  int D, G, window;
  bool sinks;
  int splits_target;
};

TEST(CudaKvQuant, AttentionMatchesCpuOverTheSameBytes) {
  PIPELLM_REQUIRE_GPU();
  std::mt19937_64 rng(11);
  for (const AttnCase c : {AttnCase{64, 4, 0, false, 1}, AttnCase{128, 2, 0, true, 64}, AttnCase{256, 1, 0, false, 64},
                           AttnCase{64, 8, 37, true, 132}, AttnCase{128, 4, 0, false, 132},
                           AttnCase{96, 3, 0, false, 64}, AttnCase{512, 8, 0, false, 64}}) {
    for (const TensorType kt : kTypes) {
      for (const TensorType vt : kTypes) {
        const int Hkv = 2, H = Hkv * c.G, D = c.D, n_ctx = 300, n_slots = 2;
        // Decode-like and prefill-like tokens in one batch, one padding.
        const std::vector<int32_t> pos = {0, 299, 130, 64, -1, 37, 38}, slot = {0, 1, 0, 1, 0, 1, 1};
        const int T = static_cast<int>(pos.size());
        const size_t krb = kv_row_bytes(kt, Hkv * D), vrb = kv_row_bytes(vt, Hkv * D);
        std::vector<float> kx = test::normal_vec(static_cast<size_t>(n_slots * n_ctx * Hkv * D), rng);
        const std::vector<float> vx = test::normal_vec(kx.size(), rng);
        for (size_t i = 0; i < kx.size(); i += 23) kx[i] *= 5.0f;  // a few large key channels
        std::vector<uint8_t> kc(krb * n_slots * n_ctx), vc(vrb * n_slots * n_ctx);
        for (int r = 0; r < n_slots * n_ctx; ++r) {
          kv_store_row(kt, kx.data() + static_cast<size_t>(r) * Hkv * D, Hkv * D,
                       kc.data() + static_cast<size_t>(r) * krb);
          kv_store_row(vt, vx.data() + static_cast<size_t>(r) * Hkv * D, Hkv * D,
                       vc.data() + static_cast<size_t>(r) * vrb);
        }
        const std::vector<float> q = test::normal_vec(static_cast<size_t>(T * H * D), rng);
        const std::vector<float> sinks = test::normal_vec(static_cast<size_t>(H), rng);
        auto dq = test::to_device(q), ds = test::to_device(sinks);
        auto dpos = test::to_device(pos), dslot = test::to_device(slot);
        auto dk = test::to_device(kc), dv = test::to_device(vc);
        cuda::DeviceBuffer<float> out(static_cast<size_t>(T * H * D));
        test::poison(out);
        cuda::AttentionArgs a = test::dense_attention_args(T, H, Hkv, D, dq.get(), out.get(), dk.get(),
                                                           dv.get(), n_ctx, dpos.get(), dslot.get());
        a.k_type = kt;
        a.v_type = vt;
        a.window = c.window;
        a.sinks = c.sinks ? ds.get() : nullptr;
        cuda::attention_split(c.window > 0 ? c.window : n_ctx, T, Hkv, c.splits_target, &a.n_splits, &a.keys_per_split);
        cuda::DeviceBuffer<float> part(static_cast<size_t>(cuda::attention_scratch_floats(T, H, D, a.n_splits)));
        a.partial = part.get();
        cuda::attention(a, nullptr);
        const std::vector<float> got = test::to_host(out, out.size());
        const std::vector<float> ref = cpu_attention(q, T, H, Hkv, D, n_ctx, kt, vt, kc, vc, pos, slot, c.window,
                                                     c.sinks ? sinks.data() : nullptr);
        EXPECT_LT(test::rel_err(got, as_double(ref)), 1e-4)
            << "K " << tensor_type_name(kt) << " V " << tensor_type_name(vt) << " D " << D << " G " << c.G << " window "
            << c.window << " splits " << a.n_splits;
        for (int i = 0; i < H * D; ++i) ASSERT_EQ(got[static_cast<size_t>(4 * H * D + i)], 0.0f) << "padding token";
      }
    }
  }
}

// Decode under a captured graph: store + attention captured once, replayed with new positions,
// slots' tokens and queries written to device memory; the cache bytes equal the CPU cache's and
// the outputs the CPU attention over them.
TEST(CudaKvQuant, DecodeUnderACapturedGraph) {
  PIPELLM_REQUIRE_GPU();
  std::mt19937_64 rng(17);
  for (const TensorType kt : {TensorType::Q8_0, TensorType::Q4_0}) {
    for (const TensorType vt : {TensorType::Q4_0, TensorType::Q8_0, TensorType::F16}) {
      const int T = 2, H = 8, Hkv = 2, D = 128, n_ctx = 64, n_slots = 2, steps = 40;
      const size_t krb = kv_row_bytes(kt, Hkv * D), vrb = kv_row_bytes(vt, Hkv * D);
      cuda::DeviceBuffer<uint8_t> kc(krb * n_slots * n_ctx), vc(vrb * n_slots * n_ctx);
      PIPELLM_CUDA_CHECK(cudaMemset(kc.get(), 0, kc.bytes()));
      PIPELLM_CUDA_CHECK(cudaMemset(vc.get(), 0, vc.bytes()));
      std::vector<uint8_t> ck(kc.size(), 0), cv(vc.size(), 0);  // the CPU's cache
      cuda::DeviceBuffer<float> q(static_cast<size_t>(T * H * D)), k(static_cast<size_t>(T * Hkv * D)), v(k.size()),
          out(q.size());
      cuda::DeviceBuffer<int32_t> pos(static_cast<size_t>(T));
      const std::vector<int32_t> slot = {1, 0};
      auto dslot = test::to_device(slot);

      cuda::RopeKvArgs r = test::dense_rope_args(T, H, Hkv, D, q.get(), k.get(), v.get());
      r.pos = pos.get();
      r.slot = dslot.get();
      r.k_cache = kc.get();
      r.v_cache = vc.get();
      r.k_type = kt;
      r.v_type = vt;
      r.n_ctx = n_ctx;
      r.n_rot = 0;  // the cache then holds exactly the CPU's bytes
      cuda::AttentionArgs a = test::dense_attention_args(T, H, Hkv, D, q.get(), out.get(), kc.get(),
                                                         vc.get(), n_ctx, pos.get(), dslot.get());
      a.k_type = kt;
      a.v_type = vt;
      cuda::attention_split(n_ctx, T, Hkv, 64, &a.n_splits, &a.keys_per_split);  // the context bucket's splits
      cuda::DeviceBuffer<float> part(static_cast<size_t>(cuda::attention_scratch_floats(T, H, D, a.n_splits)));
      a.partial = part.get();

      cuda::Stream stream;
      cudaGraph_t graph = nullptr;
      PIPELLM_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
      cuda::rope_kv_store(r, cuda::Launch(stream.get(), true));
      cuda::attention(a, cuda::Launch(stream.get(), true));
      PIPELLM_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &graph));
      cuda::GraphExec exec(graph);

      double worst = 0.0;
      for (int step = 0; step < steps; ++step) {
        const std::vector<int32_t> p = {step, step / 2};  // slot 0 advances every other step (rewrites its row)
        const std::vector<float> hq = test::normal_vec(q.size(), rng), hk = awkward_rows(T * Hkv, D, rng),
                                 hv = awkward_rows(T * Hkv, D, rng);
        PIPELLM_CUDA_CHECK(cudaMemcpy(q.get(), hq.data(), hq.size() * 4, cudaMemcpyHostToDevice));
        PIPELLM_CUDA_CHECK(cudaMemcpy(k.get(), hk.data(), hk.size() * 4, cudaMemcpyHostToDevice));
        PIPELLM_CUDA_CHECK(cudaMemcpy(v.get(), hv.data(), hv.size() * 4, cudaMemcpyHostToDevice));
        PIPELLM_CUDA_CHECK(cudaMemcpy(pos.get(), p.data(), p.size() * 4, cudaMemcpyHostToDevice));
        test::poison(out);
        PIPELLM_CUDA_CHECK(cudaDeviceSynchronize());  // the copies ran on the legacy stream
        exec.launch(stream.get());
        stream.synchronize();
        for (int t = 0; t < T; ++t) {
          const size_t row = static_cast<size_t>(slot[static_cast<size_t>(t)] * n_ctx + p[static_cast<size_t>(t)]);
          kv_store_row(kt, hk.data() + static_cast<size_t>(t) * Hkv * D, Hkv * D, ck.data() + row * krb);
          kv_store_row(vt, hv.data() + static_cast<size_t>(t) * Hkv * D, Hkv * D, cv.data() + row * vrb);
        }
        ASSERT_EQ(host_bytes(kc), ck) << "K bytes after step " << step;
        ASSERT_EQ(host_bytes(vc), cv) << "V bytes after step " << step;
        const std::vector<float> got = test::to_host(out, out.size());
        const std::vector<float> ref = cpu_attention(hq, T, H, Hkv, D, n_ctx, kt, vt, ck, cv, p, slot, 0, nullptr);
        const double e = test::rel_err(got, as_double(ref));
        worst = std::max(worst, e);
        ASSERT_LT(e, 1e-4) << "K " << tensor_type_name(kt) << " V " << tensor_type_name(vt) << " step " << step;
      }
      std::printf("[ K %s V %s ] graph decode: worst rel err vs CPU %.2e over %d steps\n", tensor_type_name(kt),
                  tensor_type_name(vt), worst, steps);
    }
  }
}

// The whole engine: CUDA and CPU stages with the same quantized cache types give close logits
// (their products differ as with f16 caches), greedy decode through CUDA graphs equals eager
// decode bit for bit, and the stage refuses types it cannot store.
std::unique_ptr<cuda::CudaModel> open_cuda(const std::string& name, TensorType k, TensorType v, bool graphs) {
  cuda::CudaStageOptions opt;
  opt.n_ctx = 128;
  opt.n_slots = 2;
  opt.max_batch_tokens = 64;
  opt.use_graphs = graphs;
  opt.kv_type_k = k;
  opt.kv_type_v = v;
  return cuda::CudaModel::open(test::model_path(name), opt);
}

TEST(CudaKvQuant, EngineMatchesCpuEngineWithTheSameCacheTypes) {
  PIPELLM_REQUIRE_GPU();
  for (const std::string name : {"tiny-llama-Q8_0", "tiny-qwen3-Q8_0"}) {
    const auto tokens = test::read_ids(test::fixture_ref(name, ".tokens"));
    double f16_gap = 0.0;
    for (const auto& kv :
         {std::make_pair(TensorType::F16, TensorType::F16), std::make_pair(TensorType::Q8_0, TensorType::Q8_0),
          std::make_pair(TensorType::Q4_0, TensorType::Q4_0), std::make_pair(TensorType::Q8_0, TensorType::Q4_0)}) {
      CpuModelOptions copt;
      copt.n_threads = 4;
      copt.stage.n_ctx = 128;
      copt.stage.kv_type_k = kv.first;
      copt.stage.kv_type_v = kv.second;
      auto cpu = CpuModel::open(test::model_path(name), copt);
      auto gpu = open_cuda(name, kv.first, kv.second, true);
      std::vector<float> lc, lg;
      cpu->stage().forward(Batch::sequence(tokens, 0, 0, true), lc);
      gpu->stage().forward(Batch::sequence(tokens, 0, 0, true), lg);
      ASSERT_EQ(lc.size(), lg.size());
      const double gap = test::rel_rms(lg.data(), lc.data(), lc.size());
      if (kv.first == TensorType::F16) f16_gap = gap;
      std::printf("[ %s K %s V %s ] CUDA vs CPU logits rel RMS %.2e (f16 caches %.2e)\n", name.c_str(),
                  tensor_type_name(kv.first), tensor_type_name(kv.second), gap, f16_gap);
      // The engines' own difference (f16 caches: the products) plus the occasional code that
      // rounds the other way where the two engines' K/V floats differ: one step of the block.
      EXPECT_LT(gap, 0.05) << name;

      // Decode: graphs against eager launches, bit for bit.
      auto eager = open_cuda(name, kv.first, kv.second, false);
      std::vector<float> lgr, ler, tmp;
      const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 20);
      gpu->stage().forward(Batch::sequence(prompt, 0, 1), tmp);
      eager->stage().forward(Batch::sequence(prompt, 0, 1), tmp);
      int32_t cur = test::argmax(tmp.data() + tmp.size() - static_cast<size_t>(cpu->config().n_vocab),
                                 static_cast<size_t>(cpu->config().n_vocab));
      for (int32_t p = 20; p < 40; ++p) {
        const int32_t a = test::decode_step(gpu->stage(), {cur}, {p}, {1})[0];
        const int32_t b = test::decode_step(eager->stage(), {cur}, {p}, {1})[0];
        gpu->stage().last_logits(1, lgr);
        eager->stage().last_logits(1, ler);
        ASSERT_EQ(0, std::memcmp(lgr.data(), ler.data(), lgr.size() * sizeof(float))) << name << " position " << p;
        ASSERT_EQ(a, b);
        cur = a;
      }
      EXPECT_GT(gpu->stage().graphs_captured(), 0u);
    }
  }
}

TEST(CudaKvQuant, StageRefusesF32AndPartialBlocks) {
  PIPELLM_REQUIRE_GPU();
  EXPECT_THROW(open_cuda("tiny-llama-Q8_0", TensorType::F32, TensorType::F16, true), InvalidArgument);
  EXPECT_THROW(open_cuda("tiny-llama-Q8_0", TensorType::F16, TensorType::Q5_0, true), InvalidArgument);
}

}  // namespace
}  // namespace pipellm

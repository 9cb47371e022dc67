// Gated DeltaNet CUDA ops (kernels/cuda/delta_net.h) against the CPU reference: decode (one row per
// slot), prefill (one slot, many rows, continued in a second call), mixed batches with interleaved
// slots, resets at pos 0, padding rows, many slots (more than one per block) and a CUDA graph
// replayed on new batches. The CPU side keeps per-slot states and runs each slot's rows in order.
#include "kernels/cpu/delta_net.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/cuda/delta_net.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/random_data.h"

namespace pipellm {
namespace {

using test::normal_vec;
using test::uniform_vec;

// One step's rows: row t is at position pos[t] of slot slot[t] (pos < 0: padding).
struct Batch {
  std::vector<int32_t> pos, slot;
  std::vector<float> x;        // [T][C] conv input
  std::vector<float> qkv;      // [T][C] delta-rule input, q | k | v
  std::vector<float> g, beta;  // [T][Hv]
  int size() const { return static_cast<int>(pos.size()); }
};

Batch make_batch(const DeltaNetShape& s, const std::vector<int32_t>& pos, const std::vector<int32_t>& slot,
                 std::mt19937_64& rng) {
  Batch b;
  b.pos = pos;
  b.slot = slot;
  const size_t T = pos.size();
  b.x = normal_vec(T * s.channels(), rng);
  b.qkv = normal_vec(T * s.channels(), rng);
  b.g = uniform_vec(T * s.n_v_heads, rng, -1.6f, -0.01f);
  b.beta = uniform_vec(T * s.n_v_heads, rng, 0.05f, 0.95f);
  return b;
}

// max |a - ref| / max |ref| over the real rows; padding rows must still hold the NaN poison.
void expect_rows(const std::vector<float>& got, const std::vector<float>& ref, const Batch& b, int64_t width,
                 double tol, const std::string& what) {
  double err = 0.0, mag = 0.0;
  bool finite = true, poison_kept = true;
  for (int t = 0; t < b.size(); ++t) {
    for (int64_t i = 0; i < width; ++i) {
      const size_t e = static_cast<size_t>(t * width + i);
      if (b.pos[static_cast<size_t>(t)] < 0) {
        poison_kept = poison_kept && std::isnan(got[e]);
        continue;
      }
      finite = finite && std::isfinite(got[e]);
      err = std::max(err, static_cast<double>(std::abs(got[e] - ref[e])));
      mag = std::max(mag, static_cast<double>(std::abs(ref[e])));
    }
  }
  EXPECT_TRUE(finite) << what;
  EXPECT_TRUE(poison_kept) << what << ": a padding row was written";
  EXPECT_LT(err / (mag > 0 ? mag : 1.0), tol) << what;
}

double max_rel(const std::vector<float>& a, const std::vector<float>& ref) {
  double err = 0.0, mag = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    err = std::max(err, static_cast<double>(std::abs(a[i] - ref[i])));
    mag = std::max(mag, static_cast<double>(std::abs(ref[i])));
  }
  return err / (mag > 0 ? mag : 1.0);
}

// Per-slot states on both sides (the slots start "used": random states), the conv weights, and
// device buffers for batches of up to max_rows rows.
struct Harness {
  DeltaNetShape s;
  int n_slots = 0, max_rows = 0;
  float eps = 1e-6f;
  std::vector<float> w, conv, state;  // CPU: [C][K], [n_slots][K-1][C], [n_slots][Hv][S][S]
  cuda::DeviceBuffer<float> d_w, d_conv, d_state, d_x, d_y, d_qkv, d_g, d_beta, d_out;
  cuda::DeviceBuffer<int32_t> d_pos, d_slot;

  Harness(const DeltaNetShape& shape, int slots, int rows, uint64_t seed) : s(shape), n_slots(slots), max_rows(rows) {
    std::mt19937_64 rng(seed);
    w = normal_vec(static_cast<size_t>(s.channels()) * s.conv_kernel, rng, 0.5f);
    conv = normal_vec(static_cast<size_t>(n_slots * s.conv_state_floats()), rng);
    state = normal_vec(static_cast<size_t>(n_slots * s.state_floats()), rng, 0.1f);
    d_w = test::to_device(w);
    d_conv = conv.empty() ? cuda::DeviceBuffer<float>(1) : test::to_device(conv);
    d_state = test::to_device(state);
    const size_t T = static_cast<size_t>(max_rows);
    d_x.resize(T * s.channels());
    d_y.resize(T * s.channels());
    d_qkv.resize(T * s.channels());
    d_g.resize(T * s.n_v_heads);
    d_beta.resize(T * s.n_v_heads);
    d_out.resize(T * s.n_v_heads * s.head);
    d_pos.resize(T);
    d_slot.resize(T);
  }

  int64_t C() const { return s.channels(); }
  int64_t O() const { return static_cast<int64_t>(s.n_v_heads) * s.head; }

  // The CPU reference of one step: each slot's real rows, in row order, gathered into contiguous
  // rows for the CPU ops; a first row at pos 0 starts from zero states.
  void reference(const Batch& b, std::vector<float>& y, std::vector<float>& out) {
    const int T = b.size();
    y.assign(static_cast<size_t>(T * C()), NAN);
    out.assign(static_cast<size_t>(T * O()), NAN);
    std::vector<bool> done(static_cast<size_t>(n_slots), false);
    for (int t0 = 0; t0 < T; ++t0) {
      const int sl = b.slot[static_cast<size_t>(t0)];
      if (b.pos[static_cast<size_t>(t0)] < 0 || done[static_cast<size_t>(sl)]) continue;
      done[static_cast<size_t>(sl)] = true;
      std::vector<int> rows;
      for (int t = t0; t < T; ++t)
        if (b.pos[static_cast<size_t>(t)] >= 0 && b.slot[static_cast<size_t>(t)] == sl) rows.push_back(t);
      float* cs = conv.data() + sl * s.conv_state_floats();
      float* st = state.data() + sl * s.state_floats();
      if (b.pos[static_cast<size_t>(t0)] == 0) {
        std::fill(cs, cs + s.conv_state_floats(), 0.0f);
        std::fill(st, st + s.state_floats(), 0.0f);
      }
      const size_t n = rows.size();
      std::vector<float> x(n * C()), yy(n * C()), qkv(n * C()), g(n * s.n_v_heads), beta(g.size()), o(n * O());
      for (size_t i = 0; i < n; ++i) {
        const int t = rows[i];
        std::copy_n(b.x.data() + t * C(), C(), x.data() + i * C());
        std::copy_n(b.qkv.data() + t * C(), C(), qkv.data() + i * C());
        std::copy_n(b.g.data() + t * s.n_v_heads, s.n_v_heads, g.data() + i * s.n_v_heads);
        std::copy_n(b.beta.data() + t * s.n_v_heads, s.n_v_heads, beta.data() + i * s.n_v_heads);
      }
      delta_conv(s, w.data(), x.data(), C(), static_cast<int>(n), cs, yy.data(), C());
      const int64_t hk = static_cast<int64_t>(s.n_k_heads) * s.head;
      delta_rule(s, qkv.data(), qkv.data() + hk, C(), qkv.data() + 2 * hk, C(), g.data(), beta.data(),
                 static_cast<int>(n), eps, st, o.data());
      for (size_t i = 0; i < n; ++i) {
        std::copy_n(yy.data() + i * C(), C(), y.data() + rows[i] * C());
        std::copy_n(o.data() + i * O(), O(), out.data() + rows[i] * O());
      }
    }
  }

  // Copies a batch in (padded to n_rows with pos -1 rows) and poisons the outputs.
  void upload(const Batch& b) {
    ASSERT_LE(b.size(), max_rows);
    auto put = [](auto& d, const auto& v) {
      PIPELLM_CUDA_CHECK(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(v[0]), cudaMemcpyHostToDevice));
    };
    put(d_pos, b.pos);
    put(d_slot, b.slot);
    put(d_x, b.x);
    put(d_qkv, b.qkv);
    put(d_g, b.g);
    put(d_beta, b.beta);
    test::poison(d_y);
    test::poison(d_out);
    PIPELLM_CUDA_CHECK(cudaDeviceSynchronize());  // the copies ran on the legacy stream
  }

  // Enqueues both ops for n_rows rows (what a captured graph holds).
  void enqueue(int n_rows, const cuda::Launch& l) {
    cuda::DeltaNetArgs a;
    a.shape = s;
    a.n_tokens = n_rows;
    a.pos = d_pos.get();
    a.slot = d_slot.get();
    a.eps = eps;
    cuda::delta_conv(a, d_w.get(), d_x.get(), C(), d_conv.get(), d_y.get(), C(), l);
    const int64_t hk = static_cast<int64_t>(s.n_k_heads) * s.head;
    cuda::delta_rule(a, d_qkv.get(), d_qkv.get() + hk, C(), d_qkv.get() + 2 * hk, C(), d_g.get(), d_beta.get(),
                     d_state.get(), d_out.get(), l);
  }

  // Compares the device's outputs (n rows) and all slots' states with the CPU's after `b`.
  void compare(const Batch& b, const std::string& what) {
    std::vector<float> y_ref, out_ref;
    reference(b, y_ref, out_ref);
    const auto y = test::to_host(d_y, y_ref.size()), out = test::to_host(d_out, out_ref.size());
    expect_rows(y, y_ref, b, C(), 2e-5, what + " conv");
    expect_rows(out, out_ref, b, O(), 1e-4, what + " rule");
    if (!conv.empty()) {
      EXPECT_LT(max_rel(test::to_host(d_conv, conv.size()), conv), 1e-6) << what << " conv state";
    }
    EXPECT_LT(max_rel(test::to_host(d_state, state.size()), state), 1e-4) << what << " state";
  }

  void step(const Batch& b, const std::string& what) {
    upload(b);
    enqueue(b.size(), cuda::Launch(nullptr, false));
    compare(b, what);
  }
};

std::string name(const DeltaNetShape& s) {
  return "Hk " + std::to_string(s.n_k_heads) + " Hv " + std::to_string(s.n_v_heads) + " S " + std::to_string(s.head) +
         " K " + std::to_string(s.conv_kernel);
}

// Real Qwen3.5 heads (S 128), the tiny fixtures' (S 32), S not a multiple of 32, Hv = 3 Hk, K = 2.
const std::vector<DeltaNetShape>& shapes() {
  static const std::vector<DeltaNetShape> v = {{2, 4, 128, 4}, {2, 4, 32, 4}, {1, 3, 48, 4}, {2, 2, 16, 2}};
  return v;
}

TEST(DeltaNetGpu, DecodeSeveralSlots) {
  PIPELLM_REQUIRE_GPU();
  for (const auto& s : shapes()) {
    Harness h(s, 6, 5, 11);
    std::mt19937_64 rng(12);
    std::vector<int32_t> slot = {4, 0, 2, 5, 1}, pos = {17, 3, 40, 1, 9};
    for (int step = 0; step < 3; ++step) {
      h.step(make_batch(s, pos, slot, rng), name(s) + " step " + std::to_string(step));
      for (auto& p : pos) ++p;
    }
  }
}

TEST(DeltaNetGpu, PrefillOneSlotThenContinue) {
  PIPELLM_REQUIRE_GPU();
  for (const auto& s : shapes()) {
    Harness h(s, 3, 300, 21);
    std::mt19937_64 rng(22);
    // Slot 1 is used (random states): a prompt at pos 0 must start from zeros. 300 rows span
    // several of the kernels' row windows.
    auto rows = [](int n, int p0) {
      std::vector<int32_t> pos(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = p0 + i;
      return pos;
    };
    h.step(make_batch(s, rows(300, 0), std::vector<int32_t>(300, 1), rng), name(s) + " prompt");
    h.step(make_batch(s, rows(77, 300), std::vector<int32_t>(77, 1), rng), name(s) + " second chunk");
    h.step(make_batch(s, {377}, {1}, rng), name(s) + " decode");
    h.step(make_batch(s, rows(2, 378), {1, 1}, rng), name(s) + " two rows");  // fewer than K-1 when K = 4
  }
}

TEST(DeltaNetGpu, MixedInterleavedSlotsAndPadding) {
  PIPELLM_REQUIRE_GPU();
  for (const auto& s : shapes()) {
    Harness h(s, 5, 16, 31);
    std::mt19937_64 rng(32);
    // Slot 3 continues at 10, slot 0 restarts (pos 0 on a used slot), slot 4 decodes once;
    // padding rows carry a real slot (3) and an out-of-range one, neither may be touched.
    const std::vector<int32_t> slot = {3, 0, 3, 0, 3, 3, 4, 0, 3, 999, 0, 0};
    const std::vector<int32_t> pos = {10, 0, 11, 1, 12, -1, 5, 2, 13, -1, 3, 4};
    h.step(make_batch(s, pos, slot, rng), name(s) + " mixed");
    const std::vector<int32_t> slot2 = {0, 3, 3, 2, 0};
    const std::vector<int32_t> pos2 = {5, 14, -1, 0, 6};
    h.step(make_batch(s, pos2, slot2, rng), name(s) + " mixed 2");
  }
}

TEST(DeltaNetGpu, ResetAtPosZeroAmongDecodes) {
  PIPELLM_REQUIRE_GPU();
  const DeltaNetShape s{2, 4, 128, 4};
  Harness h(s, 4, 4, 41);
  std::mt19937_64 rng(42);
  h.step(make_batch(s, {7, 0, 3, 12}, {0, 1, 2, 3}, rng), "reset slot 1");
  h.step(make_batch(s, {8, 1, 0, 13}, {0, 1, 2, 3}, rng), "reset slot 2");
}

TEST(DeltaNetGpu, OnlyPaddingChangesNothing) {
  PIPELLM_REQUIRE_GPU();
  const DeltaNetShape s{2, 4, 32, 4};
  Harness h(s, 2, 4, 51);
  std::mt19937_64 rng(52);
  h.step(make_batch(s, {-1, -1, -1, -1}, {0, 1, 0, 1}, rng), "padding only");
}

TEST(DeltaNetGpu, ManySlotsOneRowEach) {
  PIPELLM_REQUIRE_GPU();
  // More slots than the kernels' candidate groups: blocks take several slots in turn.
  const DeltaNetShape s{1, 2, 32, 4};
  const int n = 600;
  Harness h(s, n, n, 61);
  std::mt19937_64 rng(62);
  std::vector<int32_t> pos(static_cast<size_t>(n)), slot(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    slot[static_cast<size_t>(i)] = (i * 7) % n;  // a permutation (gcd(7, 600) = 1)
    pos[static_cast<size_t>(i)] = i % 5 == 0 ? 0 : 1 + i % 13;
  }
  h.step(make_batch(s, pos, slot, rng), "many slots");
  for (auto& p : pos) ++p;
  h.step(make_batch(s, pos, slot, rng), "many slots, next step");
}

TEST(DeltaNetGpu, CudaGraphReplay) {
  PIPELLM_REQUIRE_GPU();
  const DeltaNetShape s{2, 4, 128, 4};
  const int T = 8;
  Harness h(s, 6, T, 71);
  std::mt19937_64 rng(72);
  cuda::Stream stream;
  cudaGraph_t graph = nullptr;
  PIPELLM_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  h.enqueue(T, cuda::Launch(stream.get(), true));
  PIPELLM_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &graph));
  cuda::GraphExec exec(graph);
  // Fresh prompts of two rows in slots 0..3; their continuation plus a padded row; decodes with a
  // restart and a prefill chunk of 3 rows in slot 5.
  const std::vector<std::vector<int32_t>> slots = {
      {0, 0, 1, 1, 2, 2, 3, 3}, {0, 1, 2, 3, 0, 1, 2, 4}, {5, 0, 5, 1, 2, 3, 4, 5}};
  const std::vector<std::vector<int32_t>> poss = {
      {0, 1, 0, 1, 0, 1, 0, 1}, {2, 2, 2, 2, 3, -1, 3, 6}, {4, 4, 5, 0, 4, 4, 7, 6}};
  for (size_t round = 0; round < slots.size(); ++round) {
    const Batch b = make_batch(s, poss[round], slots[round], rng);
    h.upload(b);
    exec.launch(stream.get());
    stream.synchronize();
    h.compare(b, "graph round " + std::to_string(round));
  }
}

TEST(DeltaNetGpu, RejectsUnsupportedShapes) {
  // The checks run before any launch, so this needs no GPU.
  cuda::DeltaNetArgs a;
  a.n_tokens = 1;
  a.shape = {2, 4, 129, 4};
  EXPECT_THROW(cuda::delta_rule(a, nullptr, nullptr, 0, nullptr, 0, nullptr, nullptr, nullptr, nullptr, {}), Error);
  a.shape = {2, 3, 64, 4};
  EXPECT_THROW(cuda::delta_rule(a, nullptr, nullptr, 0, nullptr, 0, nullptr, nullptr, nullptr, nullptr, {}), Error);
  a.shape = {2, 4, 64, 17};
  EXPECT_THROW(cuda::delta_conv(a, nullptr, nullptr, 0, nullptr, nullptr, 0, {}), Error);
}

}  // namespace
}  // namespace pipellm

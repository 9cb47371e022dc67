// RoutedExperts (engine/cpu/routed_experts.h): a layer's routed experts on the CPU against a float64
// reference over the dequantized stacks: separate gate/up stacks with biases, and the same
// weights as one [gate; up] stack; padding pairs (id -1) add nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/cpu/routed_experts.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/quantize.h"
#include "tests/unit/test_data.h"
#include "kernels/cpu/gated_activation.h"

namespace pipellm {
namespace {

constexpr int64_t kE = 64, kF = 96, kX = 3, kK = 2, kT = 9;

using test::random_vec;

// A stack of kX experts of `rows` x n_in, quantized to Q8_0, and its dequantized values.
struct Stack {
  std::vector<uint8_t> bytes;
  std::vector<float> deq;
  TensorView view;
  Stack(int64_t n_in, int64_t rows, uint64_t seed) {
    const auto w = random_vec(static_cast<size_t>(n_in * rows * kX), seed, 0.1f);
    const size_t row_bytes = tensor_row_bytes(TensorType::Q8_0, n_in);
    bytes.resize(row_bytes * static_cast<size_t>(rows * kX));
    deq.resize(w.size());
    for (int64_t r = 0; r < rows * kX; ++r) {
      quantize_row(TensorType::Q8_0, w.data() + r * n_in, bytes.data() + static_cast<size_t>(r) * row_bytes, n_in);
      dequantize_row(TensorType::Q8_0, bytes.data() + static_cast<size_t>(r) * row_bytes, deq.data() + r * n_in, n_in);
    }
    view.name = "stack";
    view.type = TensorType::Q8_0;
    view.n_dims = 3;
    view.ne[0] = n_in;
    view.ne[1] = rows;
    view.ne[2] = kX;
    view.nbytes = bytes.size();
    view.data = bytes.data();
  }
  // Row r of expert e times x, in float64.
  double dot(int64_t e, int64_t r, const double* x, int64_t n_in, int64_t rows) const {
    double s = 0;
    for (int64_t i = 0; i < n_in; ++i) s += static_cast<double>(deq[static_cast<size_t>((e * rows + r) * n_in + i)]) * x[i];
    return s;
  }
};

TEST(RoutedExperts, MatchesFloat64) {
  const Stack gate(kE, kF, 1), up(kE, kF, 2), down(kF, kE, 3);
  const auto gb = random_vec(static_cast<size_t>(kX * kF), 4, 0.1f), ub = random_vec(gb.size(), 5, 0.1f);
  const auto db = random_vec(static_cast<size_t>(kX * kE), 6, 0.1f);
  const auto in = random_vec(static_cast<size_t>(kT * kE), 7);
  std::vector<int32_t> ids(static_cast<size_t>(kT * kK));
  std::vector<float> w(ids.size());
  std::mt19937 rng(8);
  for (size_t p = 0; p < ids.size(); ++p) {
    ids[p] = static_cast<int32_t>(rng() % kX);
    w[p] = 0.25f + 0.5f * static_cast<float>(rng() % 100) / 100.0f;
  }
  ids[5] = -1;  // padding: adds nothing

  std::vector<double> ref(static_cast<size_t>(kT * kE), 0.0);
  for (int64_t t = 0; t < kT; ++t) {
    const std::vector<double> x(in.begin() + t * kE, in.begin() + (t + 1) * kE);
    for (int64_t k = 0; k < kK; ++k) {
      const int32_t e = ids[static_cast<size_t>(t * kK + k)];
      if (e < 0) continue;
      std::vector<double> a(static_cast<size_t>(kF));
      for (int64_t r = 0; r < kF; ++r) {
        const double g = gate.dot(e, r, x.data(), kE, kF) + gb[static_cast<size_t>(e * kF + r)];
        const double u = up.dot(e, r, x.data(), kE, kF) + ub[static_cast<size_t>(e * kF + r)];
        a[static_cast<size_t>(r)] = g / (1.0 + std::exp(-g)) * u;
      }
      for (int64_t r = 0; r < kE; ++r) {
        ref[static_cast<size_t>(t * kE + r)] +=
            w[static_cast<size_t>(t * kK + k)] * (down.dot(e, r, a.data(), kF, kE) + db[static_cast<size_t>(e * kE + r)]);
      }
    }
  }
  double mag = 0;
  for (double v : ref) mag = std::max(mag, std::abs(v));

  ThreadPool pool(2);
  RoutedExperts experts;
  ExpertStacks s;
  s.gate = &gate.view;
  s.up = &up.view;
  s.down = &down.view;
  s.gate_bias = gb.data();
  s.up_bias = ub.data();
  s.down_bias = db.data();
  s.n_embd = kE;
  s.n_ff = kF;
  s.n_expert = kX;
  std::vector<float> out(ref.size(), 7.0f);
  experts.run(s, in.data(), ids.data(), w.data(), kT, kK, out.data(), pool);
  double err = 0;
  for (size_t i = 0; i < ref.size(); ++i) err = std::max(err, std::abs(out[i] - ref[i]));
  // Three activation parts and float accumulation: float rounding of sums of 64-96 terms.
  EXPECT_LT(err, 1e-5 * mag) << "max |ref| " << mag;

  // The same experts as one [gate; up] stack per expert: the same result.
  Stack fused(kE, 2 * kF, 9);
  const size_t half = gate.bytes.size() / kX;
  for (int64_t e = 0; e < kX; ++e) {
    std::copy(gate.bytes.begin() + e * half, gate.bytes.begin() + (e + 1) * half, fused.bytes.begin() + 2 * e * half);
    std::copy(up.bytes.begin() + e * half, up.bytes.begin() + (e + 1) * half, fused.bytes.begin() + (2 * e + 1) * half);
  }
  ExpertStacks sf = s;
  sf.gate = sf.up = nullptr;
  sf.gate_up = &fused.view;
  std::vector<float> out_fused(ref.size());
  experts.run(sf, in.data(), ids.data(), w.data(), kT, kK, out_fused.data(), pool);
  EXPECT_EQ(out_fused, out);
}

}  // namespace
}  // namespace pipellm

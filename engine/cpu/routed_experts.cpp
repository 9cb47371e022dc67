#include "engine/cpu/routed_experts.h"

#include <algorithm>

#include "kernels/cpu/gated_activation.h"
#include "kernels/cpu/matmul.h"

namespace pipellm {

namespace {

constexpr int64_t kRowAlign = 4;  // thread slices start at multiples of this within a matrix (matmul.h's)

// Expert e's rows of a stack as a product over n tokens.
MatmulArgs expert_product(const TensorView& t, int64_t rows_per_expert, int64_t e, int64_t n_in, int act_parts) {
  MatmulArgs a;
  a.type = t.type;
  a.row_bytes = t.row_bytes();
  a.w = t.data + static_cast<size_t>(e * rows_per_expert) * a.row_bytes;
  a.n_rows = rows_per_expert;
  a.n = n_in;
  a.act_parts = act_parts;
  return a;
}

// Every product of `mats` in one parallel pass: their rows laid end to end and cut into one
// slice per thread, so all experts share one barrier instead of one per matrix.
void run_products(const std::vector<MatmulArgs>& mats, ThreadPool& pool) {
  int64_t total = 0;
  for (const MatmulArgs& m : mats) total += m.n_rows;
  pool.run([&](int ith, int nth) {
    const int64_t per = ((total + nth - 1) / nth + kRowAlign - 1) / kRowAlign * kRowAlign;
    const int64_t r0 = std::min(total, per * ith), r1 = std::min(total, r0 + per);
    int64_t off = 0;
    for (const MatmulArgs& m : mats) {
      const int64_t a = std::max(r0, off), b = std::min(r1, off + m.n_rows);
      if (a < b) {
        MatmulArgs sub = m;
        sub.w = static_cast<const uint8_t*>(m.w) + static_cast<size_t>(a - off) * m.row_bytes;
        sub.n_rows = b - a;
        sub.y = m.y + (a - off);
        matmul(sub, 0, 1);
      }
      off += m.n_rows;
    }
  });
}

}  // namespace

void RoutedExperts::run(const ExpertStacks& s, const float* in, const int32_t* ids, const float* w, int64_t T,
                        int64_t K, float* out, ThreadPool& pool, int act_parts) {
  const int64_t E = s.n_embd, F = s.n_ff, X = s.n_expert, P = T * K;
  std::fill(out, out + T * E, 0.0f);
  // The pairs grouped by expert in one pass (a counting sort): expert e's pairs are
  // rows_[start_[e], start_[e + 1]); pairs with an id outside [0, X) are dropped.
  start_.assign(static_cast<size_t>(X + 1), 0);
  const auto valid = [&](int64_t i) { return ids[i] >= 0 && ids[i] < X; };
  for (int64_t i = 0; i < P; ++i) {
    if (valid(i)) ++start_[static_cast<size_t>(ids[i]) + 1];
  }
  for (int64_t e = 0; e < X; ++e) start_[static_cast<size_t>(e + 1)] += start_[static_cast<size_t>(e)];
  const int64_t n = start_[static_cast<size_t>(X)];
  rows_.resize(static_cast<size_t>(n));
  {
    std::vector<int32_t> next(start_.begin(), start_.end() - 1);
    for (int64_t i = 0; i < P; ++i) {
      if (valid(i)) rows_[static_cast<size_t>(next[static_cast<size_t>(ids[i])]++)] = static_cast<int32_t>(i);
    }
  }
  if (n == 0) return;
  // Rows in expert order: input, gate (or [gate | up]), up, down.
  const bool fused = s.gate_up != nullptr;
  const int64_t GU = fused ? 2 * F : F;
  eh_.resize(static_cast<size_t>(n * E));
  eg_.resize(static_cast<size_t>(n * GU));
  eu_.resize(static_cast<size_t>(n * F));
  ed_.resize(static_cast<size_t>(n * E));
  for (int64_t j = 0; j < n; ++j) {
    const float* src = in + (rows_[static_cast<size_t>(j)] / K) * E;
    std::copy(src, src + E, eh_.data() + j * E);
  }
  std::vector<MatmulArgs> mats;
  const auto add = [&](const TensorView& t, int64_t rows, int64_t e, int64_t n_in, const float* x, float* y,
                       int64_t y_stride) {
    MatmulArgs m = expert_product(t, rows, e, n_in, act_parts);
    const int64_t j0 = start_[static_cast<size_t>(e)];
    m.x = x + j0 * n_in;
    m.x_stride = n_in;
    m.n_tokens = start_[static_cast<size_t>(e + 1)] - j0;
    m.y = y + j0 * y_stride;
    m.y_stride = y_stride;
    mats.push_back(m);
  };
  for (int64_t e = 0; e < X; ++e) {
    if (start_[static_cast<size_t>(e + 1)] == start_[static_cast<size_t>(e)]) continue;
    if (fused) {
      add(*s.gate_up, 2 * F, e, E, eh_.data(), eg_.data(), 2 * F);
    } else {
      add(*s.gate, F, e, E, eh_.data(), eg_.data(), F);
      add(*s.up, F, e, E, eh_.data(), eu_.data(), F);
    }
  }
  run_products(mats, pool);
  // The activation, in place into the gate rows (F apart from here on).
  for (int64_t j = 0; j < n; ++j) {
    const int64_t e = ids[rows_[static_cast<size_t>(j)]];
    const float* g_src = eg_.data() + j * GU;
    float* g = eg_.data() + j * F;
    float* u = eu_.data() + j * F;
    if (fused) {
      // [gate | up] rows of 2F become gate rows of F in place: row j's gate half moves down to
      // j * F, below every row not yet visited (row 0 stays where it is).
      std::copy(g_src + F, g_src + 2 * F, u);
      if (j > 0) std::copy(g_src, g_src + F, g);
    }
    for (int64_t i = 0; i < F; ++i) {
      if (s.gate_bias != nullptr) g[i] += s.gate_bias[e * F + i];
      if (s.up_bias != nullptr) u[i] += s.up_bias[e * F + i];
    }
    gated_activation(s.act, g, u, F, g);
  }
  mats.clear();
  for (int64_t e = 0; e < X; ++e) {
    if (start_[static_cast<size_t>(e + 1)] > start_[static_cast<size_t>(e)]) add(*s.down, E, e, F, eg_.data(), ed_.data(), E);
  }
  run_products(mats, pool);
  for (int64_t j = 0; j < n; ++j) {
    const int32_t r = rows_[static_cast<size_t>(j)];
    const float* bd = s.down_bias != nullptr ? s.down_bias + ids[r] * E : nullptr;
    const float wt = w[r];
    float* y = out + (r / K) * E;
    const float* o = ed_.data() + j * E;
    for (int64_t i = 0; i < E; ++i) y[i] += wt * (o[i] + (bd != nullptr ? bd[i] : 0.0f));
  }
}

}  // namespace pipellm

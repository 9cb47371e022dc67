#include "engine/cpu/routed_experts.h"

#include <algorithm>

#include "kernels/cpu/gated_activation.h"
#include "kernels/cpu/matmul.h"

namespace pipellm {

namespace {

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

}  // namespace

void RoutedExperts::run(const ExpertStacks& s, const float* in, const int32_t* ids, const float* w, int64_t T,
                        int64_t K, float* out, ThreadPool& pool, int act_parts) {
  const int64_t E = s.n_embd, F = s.n_ff, X = s.n_expert, P = T * K;
  std::fill(out, out + T * E, 0.0f);
  // The pairs grouped by expert in one pass (a counting sort): expert e's pairs are
  // rows_[start_[e], start_[e + 1]).
  start_.assign(static_cast<size_t>(X + 1), 0);
  const auto valid = [&](int64_t i) { return ids[i] >= 0 && ids[i] < X; };
  for (int64_t i = 0; i < P; ++i) {
    if (valid(i)) ++start_[static_cast<size_t>(ids[i]) + 1];
  }
  for (int64_t e = 0; e < X; ++e) start_[static_cast<size_t>(e + 1)] += start_[static_cast<size_t>(e)];
  rows_.resize(static_cast<size_t>(P));
  {
    std::vector<int32_t> next(start_.begin(), start_.end() - 1);
    for (int64_t i = 0; i < P; ++i) {
      if (valid(i)) rows_[static_cast<size_t>(next[static_cast<size_t>(ids[i])]++)] = static_cast<int32_t>(i);
    }
  }
  const bool fused = s.gate_up != nullptr;
  for (int64_t e = 0; e < X; ++e) {
    const int32_t* rows = rows_.data() + start_[static_cast<size_t>(e)];
    const int64_t n = start_[static_cast<size_t>(e + 1)] - start_[static_cast<size_t>(e)];
    if (n == 0) continue;
    eh_.resize(static_cast<size_t>(n * E));
    eg_.resize(static_cast<size_t>(n * F));
    eu_.resize(static_cast<size_t>(n * (fused ? 2 * F : F)));
    ed_.resize(eh_.size());
    for (int64_t j = 0; j < n; ++j) {
      const float* src = in + (rows[j] / K) * E;
      std::copy(src, src + E, eh_.data() + j * E);
    }
    if (fused) {
      MatmulArgs m = expert_product(*s.gate_up, 2 * F, e, E, act_parts);
      m.x = eh_.data();
      m.x_stride = E;
      m.n_tokens = n;
      m.y = eu_.data();
      m.y_stride = 2 * F;
      pool.run([&](int ith, int nth) { matmul(m, ith, nth); });
    } else {
      MatmulArgs mg = expert_product(*s.gate, F, e, E, act_parts), mu = expert_product(*s.up, F, e, E, act_parts);
      mg.x = mu.x = eh_.data();
      mg.x_stride = mu.x_stride = E;
      mg.n_tokens = mu.n_tokens = n;
      mg.y = eg_.data();
      mu.y = eu_.data();
      mg.y_stride = mu.y_stride = F;
      pool.run([&](int ith, int nth) {
        matmul(mg, ith, nth);
        matmul(mu, ith, nth);
      });
    }
    for (int64_t j = 0; j < n; ++j) {
      float* g = eg_.data() + j * F;
      float* u = fused ? eu_.data() + j * 2 * F + F : eu_.data() + j * F;
      if (fused) std::copy(u - F, u, g);
      for (int64_t i = 0; i < F; ++i) {
        if (s.gate_bias != nullptr) g[i] += s.gate_bias[e * F + i];
        if (s.up_bias != nullptr) u[i] += s.up_bias[e * F + i];
      }
      gated_activation(s.act, g, u, F, g);
    }
    MatmulArgs md = expert_product(*s.down, E, e, F, act_parts);
    md.x = eg_.data();
    md.x_stride = F;
    md.n_tokens = n;
    md.y = ed_.data();
    md.y_stride = E;
    pool.run([&](int ith, int nth) { matmul(md, ith, nth); });
    const float* bd = s.down_bias != nullptr ? s.down_bias + e * E : nullptr;
    for (int64_t j = 0; j < n; ++j) {
      const int32_t r = rows[j];
      const float wt = w[r];
      float* y = out + (r / K) * E;
      const float* o = ed_.data() + j * E;
      for (int64_t i = 0; i < E; ++i) y[i] += wt * (o[i] + (bd != nullptr ? bd[i] : 0.0f));
    }
  }
}

}  // namespace pipellm

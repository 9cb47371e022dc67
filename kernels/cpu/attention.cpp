#include "kernels/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/fp16.h"

namespace pipellm {

namespace {

// Scalar references.
float dot_f32(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
float dot_f16(const uint16_t* k, const float* q, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += fp16_to_f32(k[i]) * q[i];
  return s;
}
void axpy_f32(float a, const float* v, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * v[i];
}
void axpy_f16(float a, const uint16_t* v, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * fp16_to_f32(v[i]);
}

// AVX2/FMA/F16C variants, chosen at run time (n multiple of 8 only).
__attribute__((target("avx2,fma,f16c"))) float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
__attribute__((target("avx2,fma,f16c"))) float dot_f32_avx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  return hsum8(acc);
}
__attribute__((target("avx2,fma,f16c"))) float dot_f16_avx2(const uint16_t* k, const float* q, int n) {
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 kv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k + i)));
    acc = _mm256_fmadd_ps(kv, _mm256_loadu_ps(q + i), acc);
  }
  return hsum8(acc);
}
__attribute__((target("avx2,fma,f16c"))) void axpy_f32_avx2(float a, const float* v, float* y, int n) {
  const __m256 av = _mm256_set1_ps(a);
  for (int i = 0; i < n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(v + i), _mm256_loadu_ps(y + i)));
  }
}
__attribute__((target("avx2,fma,f16c"))) void axpy_f16_avx2(float a, const uint16_t* v, float* y, int n) {
  const __m256 av = _mm256_set1_ps(a);
  for (int i = 0; i < n; i += 8) {
    const __m256 vv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, vv, _mm256_loadu_ps(y + i)));
  }
}

bool have_avx2_f16c() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return yes;
}

}  // namespace

void attention(const AttentionArgs& a, int ith, int nth) {
  const bool f16 = a.kv_type == TensorType::F16;
  const bool simd = have_avx2_f16c() && a.head_dim % 8 == 0 && a.head_dim_v % 8 == 0;
  const int group = a.n_head / a.n_head_kv;
  std::vector<float> scores;
  const int64_t n_items = static_cast<int64_t>(a.n_tokens) * a.n_head;
  // Interleaved assignment balances the causal triangle across threads.
  for (int64_t item = ith; item < n_items; item += nth) {
    const int t = static_cast<int>(item / a.n_head);
    const int h = static_cast<int>(item % a.n_head);
    const int g = h / group;
    const int n_kv = a.n_kv[t];
    const int j0 = a.window > 0 ? std::max(0, n_kv - a.window) : 0;
    const float* q = a.q + t * a.q_stride + static_cast<int64_t>(h) * a.head_dim;
    float* out = a.out + t * a.out_stride + static_cast<int64_t>(h) * a.head_dim_v;
    scores.resize(static_cast<size_t>(n_kv));

    const uint8_t* kbase = a.k[t];
    const float sink = a.sinks != nullptr ? a.sinks[h] : -INFINITY;
    float max_s = sink;
    for (int j = j0; j < n_kv; ++j) {
      const uint8_t* row = kbase + static_cast<size_t>(a.ring > 0 ? j % a.ring : j) * a.k_row_bytes;
      float s;
      if (f16) {
        const uint16_t* kh = reinterpret_cast<const uint16_t*>(row) + static_cast<int64_t>(g) * a.head_dim;
        s = simd ? dot_f16_avx2(kh, q, a.head_dim) : dot_f16(kh, q, a.head_dim);
      } else {
        const float* kf = reinterpret_cast<const float*>(row) + static_cast<int64_t>(g) * a.head_dim;
        s = simd ? dot_f32_avx2(kf, q, a.head_dim) : dot_f32(kf, q, a.head_dim);
      }
      s *= a.scale;
      scores[static_cast<size_t>(j)] = s;
      max_s = std::max(max_s, s);
    }
    double sum = a.sinks != nullptr ? std::exp(sink - max_s) : 0.0;
    for (int j = j0; j < n_kv; ++j) {
      const float e = std::exp(scores[static_cast<size_t>(j)] - max_s);
      scores[static_cast<size_t>(j)] = e;
      sum += e;
    }
    const float inv = sum > 0.0 ? static_cast<float>(1.0 / sum) : 0.0f;

    std::fill(out, out + a.head_dim_v, 0.0f);
    const uint8_t* vbase = a.v[t];
    for (int j = j0; j < n_kv; ++j) {
      const float w = scores[static_cast<size_t>(j)] * inv;
      const uint8_t* row = vbase + static_cast<size_t>(a.ring > 0 ? j % a.ring : j) * a.v_row_bytes;
      if (f16) {
        const uint16_t* vh = reinterpret_cast<const uint16_t*>(row) + static_cast<int64_t>(g) * a.head_dim_v;
        if (simd) axpy_f16_avx2(w, vh, out, a.head_dim_v); else axpy_f16(w, vh, out, a.head_dim_v);
      } else {
        const float* vf = reinterpret_cast<const float*>(row) + static_cast<int64_t>(g) * a.head_dim_v;
        if (simd) axpy_f32_avx2(w, vf, out, a.head_dim_v); else axpy_f32(w, vf, out, a.head_dim_v);
      }
    }
  }
}

}  // namespace pipellm

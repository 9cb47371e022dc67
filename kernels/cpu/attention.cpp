#include "kernels/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/block_formats.h"
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

// Quantized rows (Q8_0, Q4_0): per block the integer codes times the block's scale. The dot
// sums each block in float and scales the sum; axpy folds the weight into the scale. n is a
// multiple of 32.
float dot_q8_0(const uint8_t* k, const float* q, int n) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(k);
  float s = 0.0f;
  for (int i = 0; i < n / kQK; ++i, q += kQK) {
    float bs = 0.0f;
    for (int j = 0; j < kQK; ++j) bs += static_cast<float>(b[i].qs[j]) * q[j];
    s += fp16_to_f32(b[i].d) * bs;
  }
  return s;
}
float dot_q4_0(const uint8_t* k, const float* q, int n) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(k);
  float s = 0.0f;
  for (int i = 0; i < n / kQK; ++i, q += kQK) {
    float bs = 0.0f;
    for (int j = 0; j < kQK / 2; ++j) {
      bs += static_cast<float>((b[i].qs[j] & 0xF) - 8) * q[j];
      bs += static_cast<float>((b[i].qs[j] >> 4) - 8) * q[j + kQK / 2];
    }
    s += fp16_to_f32(b[i].d) * bs;
  }
  return s;
}
void axpy_q8_0(float a, const uint8_t* v, float* y, int n) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(v);
  for (int i = 0; i < n / kQK; ++i, y += kQK) {
    const float ad = a * fp16_to_f32(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] += ad * static_cast<float>(b[i].qs[j]);
  }
}
void axpy_q4_0(float a, const uint8_t* v, float* y, int n) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(v);
  for (int i = 0; i < n / kQK; ++i, y += kQK) {
    const float ad = a * fp16_to_f32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] += ad * static_cast<float>((b[i].qs[j] & 0xF) - 8);
      y[j + kQK / 2] += ad * static_cast<float>((b[i].qs[j] >> 4) - 8);
    }
  }
}

// 8 codes to floats: signed bytes (Q8_0), or nibbles already in bytes minus 8 (Q4_0).
__attribute__((target("avx2,fma,f16c"))) __m256 i8x8_to_ps(__m128i b) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}
// A Q4_0 block's 32 codes minus 8 as signed bytes, in element order (low nibbles 0..15, high 16..31).
__attribute__((target("avx2,fma,f16c"))) void q4_0_codes(const BlockQ4_0& b, __m128i* lo, __m128i* hi) {
  const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i m = _mm_set1_epi8(0xF), eight = _mm_set1_epi8(8);
  *lo = _mm_sub_epi8(_mm_and_si128(qs, m), eight);
  *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(qs, 4), m), eight);
}
__attribute__((target("avx2,fma,f16c"))) float dot_q8_0_avx2(const uint8_t* k, const float* q, int n) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(k);
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n / kQK; ++i, q += kQK) {
    __m256 bs = _mm256_setzero_ps();
    for (int c = 0; c < kQK; c += 8) {
      const __m128i c8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b[i].qs + c));
      bs = _mm256_fmadd_ps(i8x8_to_ps(c8), _mm256_loadu_ps(q + c), bs);
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), bs, acc);
  }
  return hsum8(acc);
}
__attribute__((target("avx2,fma,f16c"))) float dot_q4_0_avx2(const uint8_t* k, const float* q, int n) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(k);
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n / kQK; ++i, q += kQK) {
    __m128i lo, hi;
    q4_0_codes(b[i], &lo, &hi);
    __m256 bs = _mm256_mul_ps(i8x8_to_ps(lo), _mm256_loadu_ps(q));
    bs = _mm256_fmadd_ps(i8x8_to_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(q + 8), bs);
    bs = _mm256_fmadd_ps(i8x8_to_ps(hi), _mm256_loadu_ps(q + 16), bs);
    bs = _mm256_fmadd_ps(i8x8_to_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(q + 24), bs);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), bs, acc);
  }
  return hsum8(acc);
}
__attribute__((target("avx2,fma,f16c"))) void axpy8(__m256 ad, __m128i codes, float* y) {
  _mm256_storeu_ps(y, _mm256_fmadd_ps(ad, i8x8_to_ps(codes), _mm256_loadu_ps(y)));
}
__attribute__((target("avx2,fma,f16c"))) void axpy_q8_0_avx2(float a, const uint8_t* v, float* y, int n) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(v);
  for (int i = 0; i < n / kQK; ++i, y += kQK) {
    const __m256 ad = _mm256_set1_ps(a * _cvtsh_ss(b[i].d));
    for (int c = 0; c < kQK; c += 8) axpy8(ad, _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b[i].qs + c)), y + c);
  }
}
__attribute__((target("avx2,fma,f16c"))) void axpy_q4_0_avx2(float a, const uint8_t* v, float* y, int n) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(v);
  for (int i = 0; i < n / kQK; ++i, y += kQK) {
    const __m256 ad = _mm256_set1_ps(a * _cvtsh_ss(b[i].d));
    __m128i lo, hi;
    q4_0_codes(b[i], &lo, &hi);
    axpy8(ad, lo, y);
    axpy8(ad, _mm_srli_si128(lo, 8), y + 8);
    axpy8(ad, hi, y + 16);
    axpy8(ad, _mm_srli_si128(hi, 8), y + 24);
  }
}

bool have_avx2_f16c() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return yes;
}

// The row kernels of one cache type: a head of n values at `head` (bytes).
struct RowKernels {
  float (*dot)(const uint8_t* head, const float* q, int n);
  void (*axpy)(float a, const uint8_t* head, float* y, int n);
  size_t head_bytes;  // bytes of one head in a row
};

template <float (*Dot)(const uint16_t*, const float*, int)>
float dot_as_f16(const uint8_t* k, const float* q, int n) { return Dot(reinterpret_cast<const uint16_t*>(k), q, n); }
template <float (*Dot)(const float*, const float*, int)>
float dot_as_f32(const uint8_t* k, const float* q, int n) { return Dot(reinterpret_cast<const float*>(k), q, n); }
template <void (*Axpy)(float, const uint16_t*, float*, int)>
void axpy_as_f16(float a, const uint8_t* v, float* y, int n) { Axpy(a, reinterpret_cast<const uint16_t*>(v), y, n); }
template <void (*Axpy)(float, const float*, float*, int)>
void axpy_as_f32(float a, const uint8_t* v, float* y, int n) { Axpy(a, reinterpret_cast<const float*>(v), y, n); }

// The SIMD kernels need rows in whole vectors: 8 floats (F16/F32), a block (quantized: always).
RowKernels row_kernels(TensorType type, int n, const char* side) {
  const bool simd = have_avx2_f16c() && n % 8 == 0;
  switch (type) {
    case TensorType::F16:
      return simd ? RowKernels{dot_as_f16<dot_f16_avx2>, axpy_as_f16<axpy_f16_avx2>, 2 * static_cast<size_t>(n)}
                  : RowKernels{dot_as_f16<dot_f16>, axpy_as_f16<axpy_f16>, 2 * static_cast<size_t>(n)};
    case TensorType::F32:
      return simd ? RowKernels{dot_as_f32<dot_f32_avx2>, axpy_as_f32<axpy_f32_avx2>, 4 * static_cast<size_t>(n)}
                  : RowKernels{dot_as_f32<dot_f32>, axpy_as_f32<axpy_f32>, 4 * static_cast<size_t>(n)};
    case TensorType::Q8_0:
    case TensorType::Q4_0: {
      if (n % kQK != 0) {
        throw InvalidArgument(std::string("attention: a ") + tensor_type_name(type) + " " + side +
                              " cache needs a head size that is a multiple of 32, not " + std::to_string(n));
      }
      const size_t bytes = tensor_row_bytes(type, n);
      if (type == TensorType::Q8_0) {
        return simd ? RowKernels{dot_q8_0_avx2, axpy_q8_0_avx2, bytes} : RowKernels{dot_q8_0, axpy_q8_0, bytes};
      }
      return simd ? RowKernels{dot_q4_0_avx2, axpy_q4_0_avx2, bytes} : RowKernels{dot_q4_0, axpy_q4_0, bytes};
    }
    default: break;
  }
  throw InvalidArgument(std::string("attention: ") + side + " cache type " + tensor_type_name(type) +
                        " unsupported (f16, f32, q8_0, q4_0)");
}

}  // namespace

void attention(const AttentionArgs& a, int ith, int nth) {
  const RowKernels kk = row_kernels(a.k_type.value_or(a.kv_type), a.head_dim, "K");
  const RowKernels vk = row_kernels(a.v_type.value_or(a.kv_type), a.head_dim_v, "V");
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

    const uint8_t* kbase = a.k[t] + static_cast<size_t>(g) * kk.head_bytes;
    const float sink = a.sinks != nullptr ? a.sinks[h] : -INFINITY;
    float max_s = sink;
    for (int j = j0; j < n_kv; ++j) {
      const uint8_t* kh = kbase + static_cast<size_t>(a.ring > 0 ? j % a.ring : j) * a.k_row_bytes;
      const float s = kk.dot(kh, q, a.head_dim) * a.scale;
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
    const uint8_t* vbase = a.v[t] + static_cast<size_t>(g) * vk.head_bytes;
    for (int j = j0; j < n_kv; ++j) {
      const float w = scores[static_cast<size_t>(j)] * inv;
      const uint8_t* vh = vbase + static_cast<size_t>(a.ring > 0 ? j % a.ring : j) * a.v_row_bytes;
      vk.axpy(w, vh, out, a.head_dim_v);
    }
  }
}

}  // namespace pipellm

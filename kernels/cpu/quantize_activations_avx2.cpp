// AVX2 activation rounding helpers (quantize_activations_avx2.h).
#include "kernels/cpu/quantize_activations_avx2.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cfloat>

// No FMA: a product and a sum must stay two roundings, as in the portable loops.
#define PIPELLM_AVX2 __attribute__((target("avx2")))

namespace pipellm::detail {

PIPELLM_AVX2 bool absmax_avx2(const float* x, int len, float* amax) {
  const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX);
  __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int i = 0; i < len; i += 8) {
    const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
    mx = _mm256_max_ps(mx, a);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));  // infinite or NaN
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  *amax = _mm_cvtss_f32(m);
  return _mm256_movemask_ps(bad) == 0;
}

PIPELLM_AVX2 void round_scaled_avx2(const float* x, int len, float mul, int8_t* q) {
  const __m256 mv = _mm256_set1_ps(mul);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the packs' lane interleave
  for (int i = 0; i < len; i += 32) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), mv));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), mv));
    const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), mv));
    const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), mv));
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(packed, order));
  }
}

PIPELLM_AVX2 void add_scaled_avx2(const int8_t* q, float d, int len, bool add, float* r) {
  const __m256 dv = _mm256_set1_ps(d);
  for (int i = 0; i < len; i += 8) {
    const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
    const __m256 v = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)));
    const __m256 ri = _mm256_loadu_ps(r + i);
    _mm256_storeu_ps(r + i, add ? _mm256_add_ps(ri, v) : _mm256_sub_ps(ri, v));
  }
}

}  // namespace pipellm::detail

#else  // not x86: never called (callers check the CPU)

namespace pipellm::detail {
bool absmax_avx2(const float*, int, float*) { return false; }
void round_scaled_avx2(const float*, int, float, int8_t*) {}
void add_scaled_avx2(const int8_t*, float, int, bool, float*) {}
}  // namespace pipellm::detail

#endif

// Helpers shared by the AVX2 kernels. The build has no -march flags: each function carries its
// target attribute and the kernels are chosen at run time (vec_dot_kernel, vec_dot_q8).
#pragma once
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstdint>

#define PIPELLM_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace pipellm::detail::avx2 {

PIPELLM_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

PIPELLM_AVX2 inline float half(uint16_t h) { return _cvtsh_ss(h); }

}  // namespace pipellm::detail::avx2

#endif

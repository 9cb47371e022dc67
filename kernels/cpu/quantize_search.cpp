// Least-squares grid searches for the quantizers. The 8 candidate grids are evaluated side by
// side, one per lane (two SSE registers, baseline on x86-64), so no float sum is reassociated
// and no horizontal reduction is needed. Other CPUs take the same arithmetic lane by lane.
#include "kernels/cpu/quantize_search.h"

#include <cmath>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels/cpu/fp16.h"

namespace pipellm::detail {
namespace {

constexpr int kCandidates = 8;
constexpr float kRoundMagic = 12582912.0f;  // see round_nearest

// Sums over the values of l, l^2 and x*l per candidate grid, where
// l = round(clamp((x - offset) * iscale[c], lo, hi)).
struct GridSums {
  float l[kCandidates], l2[kCandidates], xl[kCandidates];
};

GridSums grid_sums(const float* x, int n, float offset, const float* iscale, float lo, float hi) {
  GridSums s{};
#if defined(__SSE2__)
  const __m128 is0 = _mm_loadu_ps(iscale), is1 = _mm_loadu_ps(iscale + 4);
  const __m128 vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi), magic = _mm_set1_ps(kRoundMagic);
  __m128 sl0 = _mm_setzero_ps(), sl1 = sl0, sl20 = sl0, sl21 = sl0, sxl0 = sl0, sxl1 = sl0;
  for (int i = 0; i < n; ++i) {
    const __m128 xv = _mm_set1_ps(x[i]), v = _mm_set1_ps(x[i] - offset);
    __m128 t0 = _mm_min_ps(_mm_max_ps(_mm_mul_ps(v, is0), vlo), vhi);
    __m128 t1 = _mm_min_ps(_mm_max_ps(_mm_mul_ps(v, is1), vlo), vhi);
    t0 = _mm_sub_ps(_mm_add_ps(t0, magic), magic);
    t1 = _mm_sub_ps(_mm_add_ps(t1, magic), magic);
    sl0 = _mm_add_ps(sl0, t0);
    sl1 = _mm_add_ps(sl1, t1);
    sl20 = _mm_add_ps(sl20, _mm_mul_ps(t0, t0));
    sl21 = _mm_add_ps(sl21, _mm_mul_ps(t1, t1));
    sxl0 = _mm_add_ps(sxl0, _mm_mul_ps(t0, xv));
    sxl1 = _mm_add_ps(sxl1, _mm_mul_ps(t1, xv));
  }
  _mm_storeu_ps(s.l, sl0);
  _mm_storeu_ps(s.l + 4, sl1);
  _mm_storeu_ps(s.l2, sl20);
  _mm_storeu_ps(s.l2 + 4, sl21);
  _mm_storeu_ps(s.xl, sxl0);
  _mm_storeu_ps(s.xl + 4, sxl1);
#else
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < kCandidates; ++c) {
      float t = (x[i] - offset) * iscale[c];
      t = t > lo ? t : lo;
      t = t < hi ? t : hi;
      const float l = (t + kRoundMagic) - kRoundMagic;
      s.l[c] += l;
      s.l2[c] += l * l;
      s.xl[c] += l * x[i];
    }
  }
#endif
  return s;
}
// Affine grids: number of steps across [min, max], relative to nmax.
constexpr float kAffineLevels[kCandidates] = {-1.0f, -0.6f, -0.3f, -0.1f, 0.0f, 0.2f, 0.5f, 1.0f};
// Symmetric grids: the largest value lands on -(nmax + this).
constexpr float kSymmetricLevels[kCandidates] = {-0.6f, -0.4f, -0.2f, -0.1f, 0.0f, 0.1f, 0.2f, 0.4f};

}  // namespace

uint16_t scale_to_fp16(float v) {
  constexpr float kMaxHalf = 65504.0f;
  v = v < kMaxHalf ? v : kMaxHalf;
  v = v > -kMaxHalf ? v : -kMaxHalf;
  return f32_to_fp16(v);
}

AffineFit fit_affine32(const float* x, int nmax) {
  constexpr int n = 32;
  float mn = x[0], mx = x[0];
  float px[8] = {}, px2[8] = {};  // lane partial sums of x and x^2
  for (int i = 0; i < n; i += 8) {
    for (int k = 0; k < 8; ++k) {
      mn = x[i + k] < mn ? x[i + k] : mn;
      mx = x[i + k] > mx ? x[i + k] : mx;
      px[k] += x[i + k];
      px2[k] += x[i + k] * x[i + k];
    }
  }
  float sum_x = 0, sum_x2 = 0;
  for (int k = 0; k < 8; ++k) {
    sum_x += px[k];
    sum_x2 += px2[k];
  }
  if (mn > 0) mn = 0;  // the format subtracts a non-negative min
  const float range = mx - mn;
  if (!(range > 1e-30f)) return {0.0f, mn};

  const float fmax_level = static_cast<float>(nmax);
  float iscale[kCandidates];
  for (int c = 0; c < kCandidates; ++c) iscale[c] = (fmax_level + kAffineLevels[c]) / range;
  const GridSums g = grid_sums(x, n, mn, iscale, 0.0f, fmax_level);
  const float *sl = g.l, *sl2 = g.l2, *sxl = g.xl;
  // Per grid, minimise sum (a*l + b - x)^2 over (a, b) with b <= 0; keep the best grid.
  AffineFit best{range / fmax_level, mn};
  float best_err = INFINITY;
  for (int c = 0; c < kCandidates; ++c) {
    const float det = n * sl2[c] - sl[c] * sl[c];
    float a = 0, b = 0;
    if (det > 0) {
      a = (n * sxl[c] - sum_x * sl[c]) / det;
      b = (sl2[c] * sum_x - sl[c] * sxl[c]) / det;
    }
    if (b > 0 || !(det > 0)) {
      b = 0;
      a = sl2[c] > 0 ? sxl[c] / sl2[c] : 0;
    }
    if (a < 0) a = 0;
    const float err = a * a * sl2[c] + 2 * a * b * sl[c] + n * b * b - 2 * a * sxl[c] - 2 * b * sum_x + sum_x2;
    if (err < best_err) {
      best_err = err;
      best = {a, b};
    }
  }
  return best;
}

float fit_symmetric(const float* x, int n, int nmax) {
  float amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      vmax = x[i];
    }
  }
  if (!(amax > 1e-30f)) return 0.0f;
  const float lo = static_cast<float>(-nmax), hi = static_cast<float>(nmax - 1);
  float iscale[kCandidates];
  for (int c = 0; c < kCandidates; ++c) iscale[c] = -(static_cast<float>(nmax) + kSymmetricLevels[c]) / vmax;
  const GridSums g = grid_sums(x, n, 0.0f, iscale, lo, hi);
  const float *sl2 = g.l2, *sxl = g.xl;
  // For fixed levels the best scale is sxl/sl2, leaving error sum x^2 - sxl^2/sl2.
  float best_score = -1, best_scale = -vmax / static_cast<float>(nmax);
  for (int c = 0; c < kCandidates; ++c) {
    if (sl2[c] > 0 && sxl[c] * sxl[c] > best_score * sl2[c]) {
      best_score = sxl[c] * sxl[c] / sl2[c];
      best_scale = sxl[c] / sl2[c];
    }
  }
  return best_scale;
}

}  // namespace pipellm::detail

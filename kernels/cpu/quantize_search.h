// Scale searches shared by the quantizers (internal to kernels/cpu): given a small group of
// floats, find the scale (and offset) of a uniform integer grid that fits them best in the
// least-squares sense, trying a handful of candidate grids and solving for each in closed form.
#pragma once
#include <cstdint>
#include <cstring>

namespace pipellm::detail {

// Round to nearest (ties to even) for |v| < 2^22 without a libm call, so loops vectorise:
// adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
inline int32_t round_nearest(float v) {
  const float t = v + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &t, sizeof(i));
  return i - 0x4B400000;
}

// Clamps to [lo, hi] first (NaN goes to lo), then rounds: safe for any input.
inline int32_t round_clamped(float v, int32_t lo, int32_t hi) {
  const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
  v = v > flo ? v : flo;
  v = v < fhi ? v : fhi;
  return round_nearest(v);
}

// fp16 bits of a block scale, saturated to the largest finite half so huge inputs stay finite.
uint16_t scale_to_fp16(float v);

struct AffineFit {
  float scale;  // >= 0
  float min;    // <= 0: x ~= scale * q + min with q in 0..nmax
};

// Best (scale, min) for 32 values and q in 0..nmax: 8 grids spanning the values' range with
// nmax-1 .. nmax+1 steps, each solved by least squares for scale and min.
AffineFit fit_affine32(const float* x, int nmax);

// Best signed scale for n (a multiple of 8) values and q in -nmax..nmax-1, x ~= scale * q:
// 8 grids on which the value of largest magnitude lands near -nmax. Returns 0 for zeros.
float fit_symmetric(const float* x, int n, int nmax);

}  // namespace pipellm::detail

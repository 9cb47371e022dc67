// AVX2 pieces of the activation rounding (quantize_activations.cpp), bit-identical to its
// portable loops: max and multiplication are exact IEEE operations, and the conversion rounds
// to nearest even as round_even does. Internal to kernels/cpu; callers check the CPU.
#pragma once
#include <cstdint>

namespace pipellm::detail {

// max |x[i]| over len (a multiple of 8) floats; false where some x[i] is NaN or infinite.
bool absmax_avx2(const float* x, int len, float* amax);

// q[i] = round_even(x[i] * mul), saturated to [-128, 127]; len a multiple of 32.
void round_scaled_avx2(const float* x, int len, float mul, int8_t* q);

// r[i] -= d * q[i] (a product, then a difference: two roundings, as in the portable loop);
// with add set, r[i] += d * q[i]. len a multiple of 8.
void add_scaled_avx2(const int8_t* q, float d, int len, bool add, float* r);

}  // namespace pipellm::detail

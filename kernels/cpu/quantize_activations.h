// Activations rounded to 8-bit blocks, so that products with quantized weights can run as
// integer dot products (the CPU engine's fast path; vec_dot_q8.h).
//
// A float vector x of n elements becomes blocks of int8 q with one float scale d per block:
// x[i] ~ d * q[i], q in [-127, 127], |d| = max|x| over the block / 127, rounded to nearest, so
// |x - d q| <= |d| / 2 (up to float rounding).
// Two block sizes, matching the weight formats they meet:
//   ActQ8Block32:  32 elements (legacy 32-element weight blocks, MXFP4), with the sum of its q
//                  (the weight's constant term, Q4_1's m, multiplies sum(x)).
//   ActQ8Block256: 256 elements (K-quant super-blocks), with the sum of q over each 16
//                  elements (Q4_K/Q5_K mins and Q6_K's -32 offset multiply those sums).
// Decode and prefill both go through this rounding, so they see the same activations.
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/tensor_type.h"

namespace pipellm {

struct ActQ8Block32 {
  float d;
  int32_t sum;  // sum of qs
  int8_t qs[32];
};

struct ActQ8Block256 {
  float d;
  int16_t bsums[16];  // bsums[k] = sum of qs[16k .. 16k+15]
  int8_t qs[256];
};

enum class ActQuant { None, Q8x32, Q8x256 };

// The activation rounding paired with a weight type; None where products stay in float
// (F32/F16/BF16 keep float activations, and formats without an integer kernel).
ActQuant act_quant_for(TensorType weight_type);

int64_t act_quant_block_size(ActQuant q);  // 32 or 256
// Bytes for n elements (n a multiple of the block size).
size_t act_quant_bytes(ActQuant q, int64_t n);

// Rounds n floats into blocks at dst (act_quant_bytes(q, n) bytes). A block holding a NaN or
// infinity gets d = NaN so the products it takes part in come out NaN, as in float.
void quantize_activations(ActQuant q, const float* x, int64_t n, void* dst);

// x as a sum of `parts` rounded vectors: part 0 rounds x, part p rounds what parts 0..p-1 left
// over, each with its own block scales, so every part shrinks the error by about 254 (three
// parts: |x - sum| <= about max|x| * 6e-8 per block, float precision). dst holds the parts one
// after the other, act_quant_bytes(q, n) apart. Integer products with every part, summed,
// behave as float products: one 8-bit part moves a model's logits by as much as llama.cpp's own
// error, and any float-level difference upstream (a batch computed in another order) flips
// roundings into differences of that size; the engine's tests allow neither.
void quantize_activations_split(ActQuant q, const float* x, int64_t n, int parts, void* dst);

// out[i] = the sum over the parts of quantize_activations_split, in float: what the integer
// kernels multiply (the references of the tests are built on it).
void round_activations(ActQuant q, const float* x, int64_t n, int parts, float* out);

// The float value of element i of a quantized vector (tests and references).
float act_quant_value(ActQuant q, const void* src, int64_t i);

}  // namespace pipellm

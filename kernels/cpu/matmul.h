// Products of a GGUF weight matrix with float activations (CPU), working on the stored blocks.
//
//   y[t][r] = sum_i W[r][i] * x[t][i]     r in [0, n_rows), t in [0, n_tokens)
// W: n_rows rows of n elements of `type`, row_bytes apart (a GGUF tensor [n, n_rows]).
// x: [n_tokens][n] floats (x_stride apart); y: [n_tokens][y_stride] floats.
// Rows are split between threads: call matmul(args, ith, nth) for ith = 0..nth-1.
// Quantized weights with an integer kernel (act_quant_for(type) != None): the activations are
// split into three 8-bit parts (quantize_activations_split: float accuracy) and a few tokens
// take integer block dots with every part (vec_dot_q8.h); many tokens take the float tiles
// below on x itself, equal to the parts' sum up to float rounding. Other types: one token, a block-wise dot product per row
// (vec_dot_rows); several tokens, each thread decodes a tile of rows to floats once and reuses
// it for every token (a 4 rows x 3 tokens register-blocked kernel).
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/tensor_type.h"

namespace pipellm {

struct MatmulArgs {
  TensorType type = TensorType::F32;
  const void* w = nullptr;
  size_t row_bytes = 0;
  int64_t n_rows = 0;
  int64_t n = 0;
  const float* x = nullptr;
  int64_t x_stride = 0;
  int64_t n_tokens = 1;
  float* y = nullptr;
  int64_t y_stride = 0;
  // 8-bit parts per activation row for the integer kernels (1 .. 3): 3 carry x to float
  // precision; 1 rounds once as llama.cpp does (a third of the integer work; error bound in
  // vec_dot_q8.h). Many tokens take the float tiles whatever this says.
  int act_parts = 3;
};

void matmul(const MatmulArgs& a, int ith, int nth);

}  // namespace pipellm

// Token sampling on the GPU: only token ids go back to the host.
// Greedy: the index of the largest logit (the lowest index among equal maxima).
// Stochastic: softmax(logits / temperature) restricted to the top_k most likely tokens
// (0: no limit), then to the smallest set whose mass reaches top_p, then to the tokens whose
// probability is at least min_p times the best one's (with temperature_last, top_p and min_p
// see softmax(logits) and the temperature applies only to the final draw, like the CPU
// sampler's default chain top_k, top_p, min_p, temperature); one draw from that distribution with a
// counter-based random number from (seed, counter[row]) (the counter lives in device memory so a
// captured graph draws fresh numbers on every replay; the kernel increments it).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  bool temperature_last = false;
};

// out[r] = argmax of row r (n_rows rows of n_vocab, stride apart).
void argmax_rows(const float* logits, int64_t stride, int n_rows, int64_t n_vocab, int32_t* out, const Launch& s);

// Samples one token per row as described above; counter: device [n_rows] (incremented).
void sample_rows(const float* logits, int64_t stride, int n_rows, int64_t n_vocab, const SamplingParams& p,
                 uint64_t* counter, int32_t* out, const Launch& s);

}  // namespace pipellm::cuda

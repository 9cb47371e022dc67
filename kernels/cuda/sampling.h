// Token sampling on the GPU, per sequence: only token ids go back to the host.
//
// Every KV slot has its sequence's settings in device memory (SlotSampling, written when the
// sequence starts) and a token history [n_slots][n_ctx] (record_tokens writes each token of a
// step at its slot and position), so a captured decode graph samples every row with its own
// settings and penalties without any host work. Per row, as engine/runtime's Sampler does:
// 1. penalties over the window of the slot's last penalty_last_n tokens up to the row's position
//    (repeat: logit / r if positive else * r; then - count * frequency - presence), in place;
// 2. greedy (temperature <= 0): the index of the largest logit (the lowest among equal maxima);
// 3. else softmax restricted to the top_k most likely tokens (0: no limit), then to the smallest
//    set whose mass reaches top_p, then to the tokens whose probability is at least min_p times
//    the best one's; the temperature applies before top_p and min_p or, with temperature_last,
//    only to the final draw (the default chain top_k, top_p, min_p, temperature); one draw with
//    a counter-based random number from (seed, counter[slot]) (the kernel increments it).
// Where the slot asks (logprobs), the chosen token's natural-log probability under the softmax of
// the row after penalties (temperature 1) goes to logprob[row]; NaN elsewhere.
// Rows whose position is negative are padding: they get token 0 and draw nothing.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

struct SlotSampling {
  float temperature = 0.0f;  // <= 0: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repeat_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int32_t penalty_last_n = 0;  // 0: no penalties
  uint64_t seed = 0;
  int32_t temperature_last = 1;
  int32_t logprobs = 0;  // write the chosen token's log-probability (softmax after penalties, T = 1)
};

struct SampleRowsArgs {
  float* logits = nullptr;  // [n_rows][stride]; penalties are applied in place
  int64_t stride = 0;
  int n_rows = 0;
  int64_t n_vocab = 0;
  const int32_t* row_slot = nullptr;  // device [n_rows]
  const int32_t* row_pos = nullptr;   // device [n_rows]; < 0: padding
  const SlotSampling* slots = nullptr;  // device [n_slots]
  uint64_t* counter = nullptr;          // device [n_slots]
  const int32_t* history = nullptr;     // device [n_slots][n_ctx]
  int n_ctx = 0;
  int32_t* out = nullptr;  // device [n_rows]
  float* logprob = nullptr;  // device [n_rows] or null: the chosen token's log-probability where asked, else NaN
};

// history[slot[i] * n_ctx + pos[i]] = tokens[i] for the n rows with pos >= 0.
void record_tokens(const int32_t* tokens, const int32_t* pos, const int32_t* slot, int n, int32_t* history, int n_ctx,
                   const Launch& s);

void sample_rows(const SampleRowsArgs& a, const Launch& s);

}  // namespace pipellm::cuda

// Gated DeltaNet on the GPU (reference: kernels/cpu/delta_net.h), device-driven so a decode
// step stays inside a CUDA graph: each token row t belongs to the sequence in slot slot[t]
// (device memory) whose conv state and recurrent state live in per-slot arrays; rows with
// pos[t] < 0 are padding (nothing read or written). Rows of one slot must appear in position
// order; a row with pos[t] == 0 starts its sequence (its states are taken as zeros).
//
// delta_conv: y[t] = silu(causal conv) for every row, conv states [n_slots][K-1][C] updated.
// delta_rule: the recurrence for every row (rows of one slot in order; different slots in
//   parallel), states [n_slots][Hv][S][S] updated; q/k/v/g/beta/out as in the CPU reference.
// Prefill chunks of many tokens of one sequence may use a chunked kernel internally; results
// equal the recurrence within float rounding.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/delta_net.h"
#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

struct DeltaNetArgs {
  DeltaNetShape shape;
  int n_tokens = 0;
  const int32_t* pos = nullptr;   // device [T]
  const int32_t* slot = nullptr;  // device [T]
  float eps = 1e-6f;
};

void delta_conv(const DeltaNetArgs& a, const float* w, const float* x, int64_t x_stride, float* conv_state, float* y,
                int64_t y_stride, const Launch& s);

void delta_rule(const DeltaNetArgs& a, const float* q, const float* k, int64_t qk_stride, const float* v,
                int64_t v_stride, const float* g, const float* beta, float* state, float* out, const Launch& s);

}  // namespace pipellm::cuda

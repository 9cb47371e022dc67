// The routed experts of one mixture-of-experts layer on the CPU: each expert multiplies the rows of
// the tokens routed to it (gate and up, or one [gate; up] stack; the gated activation; down), and
// each token's output is the weighted sum over its experts. One routine for the CPU stage's MoE
// layers and for a CUDA stage's experts kept in host memory (engine/model/expert_placement.h).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"
#include "engine/util/thread_pool.h"

namespace pipellm {

// One layer's expert stacks ([n_in, n_out, n_expert] views) and their biases ([n_expert][n_out]
// floats, or null). Either gate and up, or gate_up (rows gate then up, 2 x n_ff per expert).
struct ExpertStacks {
  const TensorView* gate = nullptr;
  const TensorView* up = nullptr;
  const TensorView* gate_up = nullptr;
  const TensorView* down = nullptr;
  const float* gate_bias = nullptr;
  const float* up_bias = nullptr;
  const float* down_bias = nullptr;
  GatedAct act = GatedAct::Silu;
  int64_t n_embd = 0, n_ff = 0, n_expert = 0;
};

class RoutedExperts {
 public:
  // out[t] = sum over k of w[t][k] * (down(act(gate in[t], up in[t])) + down_bias) of expert
  // ids[t][k]; in, out: [T][n_embd] (out overwritten); ids, w: [T][K]. A pair whose id is outside
  // [0, n_expert) adds nothing (a CUDA graph's padding rows). `act_parts`: 8-bit parts per
  // activation row of the quantized products (kernels/cpu/matmul.h): 3 carry float accuracy, 1 is
  // llama.cpp's one rounding (about three times less integer work).
  void run(const ExpertStacks& s, const float* in, const int32_t* ids, const float* w, int64_t T, int64_t K, float* out,
           ThreadPool& pool, int act_parts = 3);

 private:
  std::vector<float> eh_, eg_, eu_, ed_;  // one expert's input, gate, up (or gate|up), down rows
  std::vector<int32_t> rows_, start_;     // pairs grouped by expert (counting sort)
};

}  // namespace pipellm

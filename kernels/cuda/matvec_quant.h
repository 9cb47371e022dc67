// Quantized matrix-vector products for decode (1..16 activation rows), reading the weights in
// their device layout (weight_layout.h). Reference: kernels/cpu/matmul.h.
//
//   acc[b][r] = sum_i W[r][i] * x[b][i]      r < n_out, b < n_rows (1..kMatvecMaxRows)
//   mode Store:  y[b][r] = acc            Add: y[b][r] += acc (residual)
//   mode Gated:  y[b][r] = act(acc, acc2), acc2 from a second matrix W2 (same shape), act the
//                gated activation (gated_act.cuh: silu(g) u, gelu_tanh(g) u, gpt-oss's)
//
// Every quantized type (Q4_0 ... Q8_0, Q2_K ... Q6_K, MXFP4, IQ4_NL, IQ4_XS) uses integer dot
// products (dp4a) against 8-bit activation blocks (xq/xds, see act_q8.h); F32/F16/BF16 decode
// each weight to float and use x (f32).
// Callers provide both activation forms (rmsnorm_convert produces them in one pass).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/gated_activation.h"
#include "kernels/cuda/weight_layout.h"
#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

enum class MatvecMode { Store, Add, Gated };

// A further matrix multiplied by the same activations in the same launch (fast types only; same
// type and n_in as the first): e.g. k and v beside q.
struct MatvecSegment {
  DeviceMatrix w;
  float* y = nullptr;
  int64_t y_stride = 0;
};

struct MatvecArgs {
  DeviceMatrix w;
  DeviceMatrix w2;  // Gated only: the "up" matrix (w is the gate)
  MatvecMode mode = MatvecMode::Store;
  GatedAct act = GatedAct::Silu;  // Gated only
  int n_rows = 1;   // activation rows, 1..kMatvecMaxRows
  const float* x = nullptr;      // [n_rows][w.n_in]
  const int8_t* xq = nullptr;    // [n_rows][w.n_in]
  const float2* xds = nullptr;   // [n_rows][w.n_in / 32]
  float* y = nullptr;            // [n_rows][y_stride]
  int64_t y_stride = 0;
  MatvecSegment extra[2];        // Store/Add modes only, when matvec_uses_q8(w.type)
  int n_extra = 0;
  // F32/F16/BF16 weights: a block per output row instead of a warp (rows of a multiple of 8,
  // weights and x 16-byte aligned; else the warp kernel). Off until measured on a GPU.
  bool float_split = false;
  // Quantized weights, up to 4 activation rows: the block's rows take their (row, block) pairs in
  // one sequence where a row's blocks leave some of a pass's lane groups idle (n_in 2048 or 5376
  // Q4_K: half or a third of them). Not yet measured on a GPU: off by default.
  bool flat_items = false;
};

constexpr int kMatvecMaxRows = 16;

// True when the product of this type reads the 8-bit activations (xq/xds) rather than x.
bool matvec_uses_q8(TensorType t);

void matvec(const MatvecArgs& a, const Launch& s);

}  // namespace pipellm::cuda

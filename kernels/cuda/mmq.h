// Products of several activation rows with quantized weights on tensor cores, for batched decode
// and small prefill chunks, without a dequantized copy of the weights. Reference:
// kernels/cpu/matmul.h; test: tests/gpu/mmq_test.cpp.
//
//   y[t][r] (+)= sum_k W[r][k] * x[t][k]      r < w.n_out, t < n_rows
//
// Two kernels share the tiling below. The int8 one (every type; the experts' products): the
// activations come as 8-bit blocks (act_q8.h: xq, and xds = {d, d * sum(q)} per 32 values), as
// rmsnorm_convert makes them for the mat-vec. The f16 one (MmqTuning::f16, the default where
// MmqArgs::xh is given): f16 activation rows, weights decoded to f16 in registers, f16 mma with f32
// sums (its design: mmq_f16.cu). A block of the int8 kernel owns 64 weight rows and up
// to 64 activation rows (8, 16, 32 or 64: the smallest that holds n_rows, so a 16-sequence
// decode step does no work for 48 empty columns). It streams its weights' raw quantized bytes and
// the activations through shared memory with asynchronous copies (256-wide K steps, MmqTuning's
// stages of them in flight), decodes the weights straight into mma fragments (m16n8k32 s8; m16n8k16 for Q6_K's
// 16-value scales) and scales each sub-block's integer sums into float accumulators. Weights are
// read once per 64 activation rows. Where 64-row tiles alone would leave SMs idle (a 4096-row
// matrix is 64 tiles), K is split over a thread-block cluster of 2..8 blocks whose partial sums
// are added in a fixed order through distributed shared memory: results are bit-stable. Several
// matrices over the same activations (q/k/v, gate/up) may share one launch (MmqArgs::extra).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/weight_layout.h"

namespace pipellm::cuda {

// How a product is laid out over the GPU: K steps in flight per block (2; 0: 4 for up to 16
// activation rows, 3 beyond), the blocks per SM the K split aims for, and whether the lanes of a
// row group share the unpacking of Q4_K / Q5_K sub-block scales (shuffles) instead of each lane
// unpacking every one. The products are latency-bound at decode sizes (ncu: 7-16% occupancy, no
// eligible warp 63-79% of cycles), so the defaults trade pipeline depth for blocks per SM:
// measured on an H100 (bench/RESULTS.md), two stages at 4 blocks per SM decode 16 sequences 20%
// and 64 sequences 9% faster than 3-4 stages at 2, the shared scales 6% and 1% more. The other
// values stay as the benchmark's ablations.
struct MmqTuning {
  int stages = 2;         // 0 or 2
  int blocks_per_sm = 4;  // 1..16
  bool shared_scales = true;
  // For the engine: q/k/v (and gate/up) of one type in one launch (MmqArgs::extra), so that the
  // 1024-row k and v products do not run alone on one block per SM: on an H100, 11% more
  // 16-sequence and 9% more 64-sequence decode (bench/RESULTS.md).
  bool fuse = true;
  // The f16 variant where MmqArgs::xh is given and the type has one (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K;
  // MXFP4 keeps the int8 kernel): weights decoded to f16 in registers, f16 activations, f16
  // products with f32 sums; no per-product scaling of integer sums. On an H100 (8B Q4_K_M shape)
  // 64 sequences decode 4246.9 -> 5606.6 tok/s and 16 sequences 2766.4 -> 2916.8 (bench/RESULTS.md).
  // Off: the int8 products (also taken wherever xh is null).
  bool f16 = true;
  // The f16 variant's warps per 64-row block: 2 x f16_k_parts, each part a share of a K step (more
  // warps per SM against more partial sums to add; with 4, registers are capped at 128 a thread so
  // that two blocks still fit an SM). 0: 4 at 64 activation columns, 2 below; on an H100 (8B Q4_K_M
  // shape) 4 parts decode 64 sequences 5586 -> 5765 tok/s but 16 sequences 2950 -> 2536.
  int f16_k_parts = 0;  // 0, 2 or 4
  // The stage's grouped expert products on f16 rows (mmq_experts takes the f16 kernel where it is
  // given MmqExpertArgs::xh and f16 is on) in batches of at least this many tokens; 0: always.
  // On an H100 (qwen3-30b-a3b Q4_K_M shape) f16 rows give pp512 11238 -> 12298 tok/s but decode
  // 16 sequences 1436 -> 1351 and 64 sequences 4418 -> 4137 (bench/RESULTS.md).
  int f16_experts_from = 256;
};

// A further matrix of a product (same type and n_in as MmqArgs::w, same activations): q, k and
// v, or gate and up, in one launch, so that small matrices fill the GPU together.
struct MmqSegment {
  DeviceMatrix w;
  float* y = nullptr;
  int64_t y_stride = 0;
};
constexpr int kMmqMaxExtra = 2;

struct MmqArgs {
  DeviceMatrix w;
  int n_rows = 0;                // activation rows
  const int8_t* xq = nullptr;    // [n_rows][w.n_in]
  const float2* xds = nullptr;   // [n_rows][w.n_in / 32]
  const __half* xh = nullptr;    // [n_rows][w.n_in] f16 activations (tuning.f16), or null
  float* y = nullptr;            // [n_rows][y_stride]
  int64_t y_stride = 0;
  bool add = false;              // y += product (residual) instead of y = product (every matrix)
  MmqSegment extra[kMmqMaxExtra];
  int n_extra = 0;
  MmqTuning tuning;
};

// Q4_0, Q8_0 and MXFP4 with n_in a multiple of 32 (a row may end inside a 256-wide K step: gpt-oss's
// 2880); Q4_K, Q5_K and Q6_K (an even number of blocks) with n_in a multiple of 256.
bool mmq_supports(const DeviceMatrix& w);

// Throws Error for a matrix mmq_supports() refuses, or extra matrices of another type or n_in.
void mmq(const MmqArgs& a, const Launch& s);

// ---- mixture of experts: the (token, expert) pairs of a step grouped by expert, each expert's
// pairs multiplied as one product (its weights read once per tile of pairs, not once per pair) ----

// Pairs grouped by expert (moe_group_pairs writes them; device memory):
struct MoeTiles {
  int32_t* order = nullptr;    // [n_pairs]: pair indices, each expert's together
  int4* tiles = nullptr;       // [max_tiles]: {expert, first index into order, pairs (<= cols), 0}
  int32_t* n_tiles = nullptr;  // [1]: tiles written
  int max_tiles = 0;           // moe_max_tiles(n_pairs, n_expert, cols) at least
  int cols = 64;               // pairs per tile: 8, 16, 32 or 64 (moe_tile_cols)
};
// Tile width for n_pairs spread over n_expert experts: the fewest of 8..64 that hold the average.
int moe_tile_cols(int n_pairs, int n_expert);
int moe_max_tiles(int n_pairs, int n_expert, int cols);
// ids[p]: pair p's expert (ids outside [0, n_expert) are left out). One small kernel.
void moe_group_pairs(const int32_t* ids, int n_pairs, int n_expert, const MoeTiles& t, const Launch& s);

struct MmqExpertArgs {
  DeviceMatrix w;             // expert 0 (n_out: one expert's rows)
  size_t expert_bytes = 0;    // bytes between experts
  MoeTiles tiles;
  int n_pairs = 0;
  const int8_t* xq = nullptr;   // activation rows [n_pairs / x_group][w.n_in]: pair p reads row p / x_group
  const float2* xds = nullptr;
  const __half* xh = nullptr;   // f16 rows beside xq for the f16 variant (with tuning.f16), or null
  int x_group = 1;
  float* y = nullptr;           // y[p][r] = sum_k W_e[r][k] x[p / x_group][k], e = pair p's expert
  int64_t y_stride = 0;
  MmqTuning tuning;             // stages, shared scales, the f16 variant (no K split: blocks_per_sm and fuse unused)
};
bool mmq_supports_experts(const DeviceMatrix& w, size_t expert_bytes);
// Throws Error for experts mmq_supports_experts() refuses.
void mmq_experts(const MmqExpertArgs& a, const Launch& s);

}  // namespace pipellm::cuda

// The streaming form of mmq (mmq.h) for decode-sized batches: no shared-memory tiles of weights
// and no barrier per K step. Each warp reads its weight rows' quantized bytes straight from global
// memory into mma fragments (the next item's loads in flight while this one is multiplied, as
// the mat-vec does), with the weights as the mma's B operand (8 rows a fragment) and up to 64
// activation rows as A; the K positions within each 32-value block are permuted the same way on
// both sides where that lets a lane load 8 contiguous bytes. A block's 8 warps split K and add
// their partial sums in a fixed order: results are bit-stable. Reached through mmq() when
// MmqTuning::stream_max_rows allows it; its test is tests/gpu/mmq_test.cpp (the same float64
// reference as the tile kernel).
#pragma once
#include "kernels/cuda/mmq.h"

namespace pipellm::cuda {

constexpr int kMmqStreamMaxRows = 64;

// Types with a streaming kernel (the tile kernel's types).
bool mmq_stream_supports(TensorType t);

// a as mmq() has validated it (supported weights, extra matrices of the same type and n_in),
// 1 <= a.n_rows <= kMmqStreamMaxRows.
void mmq_stream(const MmqArgs& a, const Launch& s);

}  // namespace pipellm::cuda

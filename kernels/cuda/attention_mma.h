// The split phase of attention() (attention.h) on tensor cores, for f16 caches: the query heads
// of a kv head's group are the rows of m16n8k16 f16 products (scores = Q K^T, output += P V, f32
// accumulators), one 16-key chunk at a time per warp with an online softmax in registers; the four
// warps of a block take interleaved chunks of the split and merge their states in a fixed order
// at the end (bit-stable). Writes the same partial results as the CUDA-core split kernel, so the
// same combine kernel finishes it. Q and the probabilities P are rounded to f16 for the products
// (as llama.cpp's flash attention does): results differ from the f32 kernel by about 2^-11
// relative. Test: tests/gpu/kernels_test.cpp (CudaKernels.AttentionMatchesFloat64).
#pragma once
#include "kernels/cuda/attention.h"

namespace pipellm::cuda {

// F16 keys and values, head_dim 64, 128 or 256 (242 registers a thread and 141 KB of shared
// memory: one block per SM), at most 16 query heads per kv head.
bool attention_mma_supports(const AttentionArgs& a);

// The split kernel for a (attention_mma_supports(a)), grid (n_head_kv, n_splits, n_tokens).
void attention_mma_split(const AttentionArgs& a, const Launch& s);

}  // namespace pipellm::cuda

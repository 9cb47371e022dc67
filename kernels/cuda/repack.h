// The device layout of kernels/cuda/weight_layout.h made on the GPU: raw GGUF blocks uploaded
// into device memory become the structure of arrays the kernels read, so that a load copies the
// file's bytes as they are (no host repack). Reference: weight_layout.h's repack_for_device.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "base/tensor_type.h"

namespace pipellm::cuda {

// Converts n_matrices matrices of `n_blocks` GGUF blocks each, stored one after another at the
// device address `src`, into the device layout at `dst` (same bytes; matrix k at the same offset
// in both), each matrix repacked on its own (an expert stack: weight_layout.h). For types that
// are not repacked this is a device copy. src and dst must not overlap. Enqueued on `s`.
// Throws Error naming the type for one the CUDA kernels cannot read.
void repack_for_device(TensorType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst, cudaStream_t s,
                       int64_t n_matrices = 1);

}  // namespace pipellm::cuda

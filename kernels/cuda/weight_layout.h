// How quantized weight matrices are laid out in device memory.
//
// Most types keep their GGUF block layout (array of blocks). Four types whose blocks are not a
// multiple of 4 bytes are repacked at upload into a structure of arrays over the whole tensor so
// that the kernels can use aligned 16-byte loads; the bytes are the same, only reordered (exact):
//   Q4_0:  [nb][16] qs, then [nb] d (fp16)
//   Q8_0:  [nb][32] qs, then [nb] d (fp16)
//   Q6_K:  [nb][128] ql, then [nb][64] qh, then [nb][16] scales, then [nb] d (fp16)
//   MXFP4: [nb][16] qs, then [nb] e (one byte each)
// where nb is the number of blocks of the repacked matrix (rows * blocks per row). A 3-D tensor
// (MoE experts [n_in, n_out, n_expert]) must be repacked one expert matrix at a time, so that
// each expert's bytes form a DeviceMatrix of their own. Loads repack on the device (repack.h);
// repack_for_device below is its reference and serves host images (weight streaming).
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/tensor_type.h"

namespace pipellm::cuda {

// A weight matrix on the device: n_out rows of n_in elements (a GGUF tensor [n_in, n_out]).
struct DeviceMatrix {
  TensorType type = TensorType::F32;
  int64_t n_in = 0;
  int64_t n_out = 0;
  const uint8_t* data = nullptr;  // device layout above

  int64_t blocks() const;  // blocks of the whole tensor
  size_t bytes() const;
};

// True for the types whose device layout is the structure of arrays described above.
bool is_repacked(TensorType type);
// Types the CUDA kernels can read (dequantize / multiply).
bool cuda_supports(TensorType type);

// Converts `n_blocks` GGUF blocks at `src` into the device layout at `dst` (same byte count).
// For types that are not repacked this is a plain copy. Throws Error naming the type for one
// the CUDA kernels cannot read.
void repack_for_device(TensorType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst);

}  // namespace pipellm::cuda

// Embedding lookup and whole-matrix dequantization on the GPU (reference: dequantize_row in
// kernels/cpu/dequantize.h). Rows are decoded from the device layout (weight_layout.h).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/weight_layout.h"
#include "kernels/cuda/launch.h"

namespace pipellm::cuda {

// out[t][:] = row ids[t] of m, as float (n_ids rows of m.n_in). ids are device memory; an id
// outside [0, m.n_out) yields a zero row (the host validates ids before).
void embed_rows(const DeviceMatrix& m, const int32_t* ids, int n_ids, float* out, const Launch& s);

// The whole matrix as f16 [n_out][n_in] (for the tensor-core products).
void dequantize_f16(const DeviceMatrix& m, __half* out, cudaStream_t s);
// Rows [first_row, first_row + n_rows) as f16 [n_rows][n_in]: a large matrix in slices, so that
// the buffer is a slice, not the largest matrix. Throws Error for rows outside the matrix.
void dequantize_f16_rows(const DeviceMatrix& m, int64_t first_row, int64_t n_rows, __half* out, cudaStream_t s);

// The whole matrix as f32 [n_out][n_in] (tests).
void dequantize_f32(const DeviceMatrix& m, float* out, cudaStream_t s);

}  // namespace pipellm::cuda

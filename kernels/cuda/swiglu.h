// SwiGLU on the GPU (reference: kernels/cpu/swiglu.h): out[i] = silu(g[i]) * u[i],
// silu(g) = g / (1 + exp(-g)). n_rows rows of n values; g and u rows `stride` apart, out dense.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace pipellm::cuda {

void swiglu(const float* g, const float* u, int64_t stride, int n_rows, int64_t n, float* out, cudaStream_t s);

}  // namespace pipellm::cuda

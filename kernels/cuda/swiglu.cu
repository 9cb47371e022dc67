#include "kernels/cuda/swiglu.h"

#include <algorithm>

#include "kernels/cuda/cuda_check.h"

namespace pipellm::cuda {
namespace {

__global__ void swiglu_kernel(const float* g, const float* u, int64_t stride, int64_t n, int64_t total, float* out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const float gv = g[r * stride + c];
    out[i] = gv / (1.0f + __expf(-gv)) * u[r * stride + c];
  }
}

}  // namespace

void swiglu(const float* g, const float* u, int64_t stride, int n_rows, int64_t n, float* out, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n_rows) * n;
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 32));
  swiglu_kernel<<<blocks, 256, 0, s>>>(g, u, stride, n, total, out);
  PIPELLM_CUDA_LAUNCH_CHECK("swiglu");
}

}  // namespace pipellm::cuda

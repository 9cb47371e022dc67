#include "kernels/cuda/repack.h"

#include <algorithm>
#include <string>

#include "base/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/weight_layout.h"

namespace pipellm::cuda {
namespace {

// A block's fields (offset, size in bytes) in the order their arrays follow one another
// (the split_fields of weight_layout.cpp).
struct Fields {
  int n = 0;
  int block_bytes = 0;
  int off[4] = {};
  int size[4] = {};
};

Fields fields_of(TensorType type) {
  switch (type) {
    case TensorType::Q4_0: return {2, 18, {2, 0}, {16, 2}};
    case TensorType::Q8_0: return {2, 34, {2, 0}, {32, 2}};
    case TensorType::Q6_K: return {4, 210, {0, 128, 192, 208}, {128, 64, 16, 2}};
    case TensorType::MXFP4: return {2, 17, {1, 0}, {16, 1}};
    default: return {};
  }
}

// One thread per output byte: consecutive threads write consecutive bytes of one field array
// and read bytes `block_bytes` apart. The load is bound by the host-to-device copy (tens of
// GB/s), far below what this reaches, so it stays simple.
__global__ void repack_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t nb,
                              int64_t matrix_bytes, int64_t total, Fields f) {
  grid_dependency_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t base = i / matrix_bytes * matrix_bytes;
    int64_t r = i - base;  // byte within this matrix's layout
    int k = 0;
    while (k + 1 < f.n && r >= nb * f.size[k]) r -= nb * f.size[k++];
    const int64_t b = r / f.size[k], j = r - b * f.size[k];
    dst[i] = src[base + b * f.block_bytes + f.off[k] + j];
  }
}

}  // namespace

void repack_for_device(TensorType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst, cudaStream_t s,
                       int64_t n_matrices) {
  if (!cuda_supports(type))
    throw Error(std::string("CUDA: tensor type ") + tensor_type_name(type) + " is not supported");
  const int64_t matrix_bytes = n_blocks * static_cast<int64_t>(tensor_type_info(type).block_bytes);
  const int64_t total = matrix_bytes * n_matrices;
  if (total <= 0) return;
  if (!is_repacked(type)) {
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(total), cudaMemcpyDeviceToDevice, s));
    return;
  }
  const Fields f = fields_of(type);
  // A type is_repacked() names must have its fields here (as in weight_layout.cpp).
  if (f.n == 0 || f.block_bytes != static_cast<int>(tensor_type_info(type).block_bytes))
    throw Error(std::string("CUDA: no device repacking for tensor type ") + tensor_type_name(type));
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65536);
  launch_kernel(Launch(s), repack_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), src, dst, n_blocks,
                matrix_bytes, total, f);
}

}  // namespace pipellm::cuda

#include "kernels/cuda/embedding.h"

#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dequant_device.cuh"

namespace pipellm::cuda {
namespace {

template <TensorType T>
__global__ void embed_kernel(const uint8_t* w, int64_t n_in, int64_t n_out, int64_t nb, const int32_t* ids,
                             float* out) {
  grid_dependency_wait();
  constexpr int bs = TypeTraits<T>::block_size;
  const int t = blockIdx.y;
  const int32_t id = ids[t];
  const int64_t bpr = n_in / bs;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < n_in;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = 0.0f;
    if (id >= 0 && id < n_out) v = deq<T>(w, nb, id * bpr + c / bs, static_cast<int>(c % bs));
    out[t * n_in + c] = v;
  }
}

template <TensorType T, class OutT>
__global__ void dequant_kernel(const uint8_t* w, int64_t n_in, int64_t total, int64_t nb, OutT* out) {
  constexpr int bs = TypeTraits<T>::block_size;
  const int64_t bpr = n_in / bs;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n_in, c = i % n_in;
    const float v = deq<T>(w, nb, r * bpr + c / bs, static_cast<int>(c % bs));
    if constexpr (sizeof(OutT) == 2) out[i] = __float2half_rn(v);
    else out[i] = v;
  }
}

template <class OutT>
void dequantize_any(const DeviceMatrix& m, OutT* out, cudaStream_t s) {
  const int64_t total = m.n_in * m.n_out;
  if (total == 0) return;
  const int64_t nb = m.blocks();
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 64));
  const bool ok = dispatch_type(m.type, [&](auto tag) {
    constexpr TensorType T = decltype(tag)::value;
    dequant_kernel<T, OutT><<<blocks, 256, 0, s>>>(m.data, m.n_in, total, nb, out);
  });
  if (!ok) throw Error(std::string("dequantize: unsupported type ") + tensor_type_name(m.type));
  PIPELLM_CUDA_LAUNCH_CHECK("dequantize");
}

}  // namespace

void embed_rows(const DeviceMatrix& m, const int32_t* ids, int n_ids, float* out, const Launch& s) {
  if (n_ids == 0) return;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((m.n_in + 255) / 256, 16)), static_cast<unsigned>(n_ids));
  const int64_t nb = m.blocks();
  const bool ok = dispatch_type(m.type, [&](auto tag) {
    constexpr TensorType T = decltype(tag)::value;
    launch_kernel(s, embed_kernel<T>, grid, dim3(256), m.data, m.n_in, m.n_out, nb, ids, out);
  });
  if (!ok) throw Error(std::string("embed_rows: unsupported type ") + tensor_type_name(m.type));
  PIPELLM_CUDA_LAUNCH_CHECK("embed_rows");
}

void dequantize_f16(const DeviceMatrix& m, __half* out, cudaStream_t s) { dequantize_any(m, out, s); }
void dequantize_f32(const DeviceMatrix& m, float* out, cudaStream_t s) { dequantize_any(m, out, s); }

}  // namespace pipellm::cuda

#include "kernels/cuda/embedding.h"

#include <cstdint>
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

// Eight consecutive elements per thread (one row and, for block types, one block: every block
// size is a multiple of 8), stored with one 16-byte (f16) or two 16-byte (f32) writes.
// Rows row0 .. of the matrix into out[0 ..] (total elements). Wide: deq8's one-word reads (the
// weights 8-byte aligned), else deq8_each.
template <TensorType T, class OutT, bool Wide>
__global__ void dequant_kernel(const uint8_t* w, int64_t n_in, int64_t row0, int64_t total, int64_t nb, OutT* out) {
  constexpr int bs = TypeTraits<T>::block_size;
  const int64_t bpr = n_in / bs;
  const int64_t groups = total / 8;
  for (int64_t gi = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; gi < groups;
       gi += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = gi * 8, ri = i / n_in, c = i - ri * n_in, r = row0 + ri;
    float v[8];
    if constexpr (Wide) deq8<T>(w, nb, r * bpr + c / bs, static_cast<int>(c % bs), v);
    else deq8_each<T>(w, nb, r * bpr + c / bs, static_cast<int>(c % bs), v);
    if constexpr (sizeof(OutT) == 2) {
      uint4 pk;
      __half2* h = reinterpret_cast<__half2*>(&pk);
#pragma unroll
      for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
      *reinterpret_cast<uint4*>(out + i) = pk;
    } else {
      reinterpret_cast<float4*>(out + i)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(out + i)[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
  }
}

// One element per thread: rows whose length is not a multiple of 8.
template <TensorType T, class OutT>
__global__ void dequant_scalar_kernel(const uint8_t* w, int64_t n_in, int64_t row0, int64_t total, int64_t nb,
                                      OutT* out) {
  constexpr int bs = TypeTraits<T>::block_size;
  const int64_t bpr = n_in / bs;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = row0 + i / n_in, c = i % n_in;
    const float v = deq<T>(w, nb, r * bpr + c / bs, static_cast<int>(c % bs));
    if constexpr (sizeof(OutT) == 2) out[i] = __float2half_rn(v);
    else out[i] = v;
  }
}

template <class OutT>
void dequantize_any(const DeviceMatrix& m, int64_t row0, int64_t n_rows, OutT* out, cudaStream_t s) {
  if (row0 < 0 || n_rows < 0 || row0 + n_rows > m.n_out) {
    throw Error("dequantize: rows [" + std::to_string(row0) + ", " + std::to_string(row0 + n_rows) + ") of a " +
                std::to_string(m.n_out) + "-row matrix");
  }
  const int64_t total = m.n_in * n_rows;
  if (total == 0) return;
  // Rows of a multiple of 8 elements keep every group of 8 in one row (and one block).
  const bool by8 = m.n_in % 8 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const bool wide = reinterpret_cast<uintptr_t>(m.data) % 8 == 0;
  const int64_t nb = m.blocks();
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(((by8 ? total / 8 : total) + 255) / 256, 132 * 16));
  const bool ok = dispatch_type(m.type, [&](auto tag) {
    constexpr TensorType T = decltype(tag)::value;
    if (by8 && wide) dequant_kernel<T, OutT, true><<<blocks, 256, 0, s>>>(m.data, m.n_in, row0, total, nb, out);
    else if (by8) dequant_kernel<T, OutT, false><<<blocks, 256, 0, s>>>(m.data, m.n_in, row0, total, nb, out);
    else dequant_scalar_kernel<T, OutT><<<blocks, 256, 0, s>>>(m.data, m.n_in, row0, total, nb, out);
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

void dequantize_f16(const DeviceMatrix& m, __half* out, cudaStream_t s) { dequantize_any(m, 0, m.n_out, out, s); }
void dequantize_f16_rows(const DeviceMatrix& m, int64_t first_row, int64_t n_rows, __half* out, cudaStream_t s) {
  dequantize_any(m, first_row, n_rows, out, s);
}
void dequantize_f32(const DeviceMatrix& m, float* out, cudaStream_t s) { dequantize_any(m, 0, m.n_out, out, s); }

}  // namespace pipellm::cuda

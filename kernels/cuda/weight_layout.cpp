#include "kernels/cuda/weight_layout.h"

#include <cstring>
#include <string>

#include "base/error.h"

namespace pipellm::cuda {

int64_t DeviceMatrix::blocks() const { return n_out * (n_in / tensor_type_info(type).block_size); }
size_t DeviceMatrix::bytes() const { return static_cast<size_t>(n_out) * tensor_row_bytes(type, n_in); }

bool is_repacked(TensorType type) {
  return type == TensorType::Q4_0 || type == TensorType::Q8_0 || type == TensorType::Q6_K ||
         type == TensorType::MXFP4;
}

bool cuda_supports(TensorType type) { return tensor_type_info(type).cuda; }

namespace {

// Splits blocks of `block_bytes` into fields (offset, size) stored one array after another.
void split_fields(const uint8_t* src, int64_t nb, size_t block_bytes, const size_t* offs, const size_t* sizes,
                  int n_fields, uint8_t* dst) {
  size_t region = 0;
  for (int f = 0; f < n_fields; ++f) {
    uint8_t* out = dst + region;
    for (int64_t b = 0; b < nb; ++b)
      std::memcpy(out + static_cast<size_t>(b) * sizes[f], src + static_cast<size_t>(b) * block_bytes + offs[f],
                  sizes[f]);
    region += sizes[f] * static_cast<size_t>(nb);
  }
}

}  // namespace

void repack_for_device(TensorType type, const uint8_t* src, int64_t n_blocks, uint8_t* dst) {
  const size_t bb = tensor_type_info(type).block_bytes;
  switch (type) {
    case TensorType::Q4_0: {
      const size_t offs[] = {2, 0}, sizes[] = {16, 2};
      split_fields(src, n_blocks, bb, offs, sizes, 2, dst);
      return;
    }
    case TensorType::Q8_0: {
      const size_t offs[] = {2, 0}, sizes[] = {32, 2};
      split_fields(src, n_blocks, bb, offs, sizes, 2, dst);
      return;
    }
    case TensorType::Q6_K: {
      const size_t offs[] = {0, 128, 192, 208}, sizes[] = {128, 64, 16, 2};
      split_fields(src, n_blocks, bb, offs, sizes, 4, dst);
      return;
    }
    case TensorType::MXFP4: {
      const size_t offs[] = {1, 0}, sizes[] = {16, 1};
      split_fields(src, n_blocks, bb, offs, sizes, 2, dst);
      return;
    }
    default:
      if (!cuda_supports(type))
        throw Error(std::string("CUDA: tensor type ") + tensor_type_name(type) + " is not supported");
      // A type is_repacked() names must have its case above: copying it would hand the kernels
      // bytes in the wrong layout.
      if (is_repacked(type))
        throw Error(std::string("CUDA: no repacking for tensor type ") + tensor_type_name(type));
      std::memcpy(dst, src, static_cast<size_t>(n_blocks) * bb);
  }
}

}  // namespace pipellm::cuda

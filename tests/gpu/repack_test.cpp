// The device repack (kernels/cuda/repack.h) against its CPU reference repack_for_device
// (weight_layout.h), byte for byte, with the raw blocks arriving through the staged uploader
// (engine/cuda/staged_upload.h) in chunks that do not divide the tensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/cuda/staged_upload.h"
#include "kernels/cuda/repack.h"
#include "kernels/cuda/weight_layout.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

const TensorType kRepacked[] = {TensorType::Q4_0, TensorType::Q8_0, TensorType::Q6_K, TensorType::MXFP4};

// The host reference of n_matrices matrices of n_blocks blocks each, every one repacked alone.
std::vector<uint8_t> host_repack(TensorType type, const std::vector<uint8_t>& raw, int64_t n_blocks,
                                 int64_t n_matrices) {
  std::vector<uint8_t> out(raw.size());
  const size_t matrix_bytes = static_cast<size_t>(n_blocks) * tensor_type_info(type).block_bytes;
  for (int64_t e = 0; e < n_matrices; ++e) {
    cuda::repack_for_device(type, raw.data() + e * matrix_bytes, n_blocks, out.data() + e * matrix_bytes);
  }
  return out;
}

TEST(RepackForDevice, EqualsHostForEveryRepackedType) {
  PIPELLM_REQUIRE_GPU();
  for (TensorType type : kRepacked) {
    for (int64_t nb : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{4099}}) {
      const auto raw = test::random_blocks(type, nb);
      auto src = test::to_device(raw);
      cuda::DeviceBuffer<uint8_t> dst(raw.size());
      test::poison(dst);
      cuda::repack_for_device(type, src.get(), nb, dst.get(), nullptr);
      ASSERT_EQ(test::to_host(dst, dst.size()), host_repack(type, raw, nb, 1))
          << tensor_type_name(type) << ", " << nb << " blocks";
    }
  }
}

TEST(RepackForDevice, ExpertStackRepacksEachExpertAlone) {
  PIPELLM_REQUIRE_GPU();
  for (TensorType type : kRepacked) {
    const int64_t experts = 5, nb = 3 * 37;  // 3 rows of 37 blocks per expert
    const auto raw = test::random_blocks(type, experts * nb);
    auto src = test::to_device(raw);
    cuda::DeviceBuffer<uint8_t> dst(raw.size());
    test::poison(dst);
    cuda::repack_for_device(type, src.get(), nb, dst.get(), nullptr, experts);
    ASSERT_EQ(test::to_host(dst, dst.size()), host_repack(type, raw, nb, experts)) << tensor_type_name(type);
  }
}

TEST(RepackForDevice, OtherTypesAreCopied) {
  PIPELLM_REQUIRE_GPU();
  for (TensorType type : test::cuda_types()) {
    if (cuda::is_repacked(type)) continue;
    const auto raw = test::random_blocks(type, 301);
    auto src = test::to_device(raw);
    cuda::DeviceBuffer<uint8_t> dst(raw.size());
    test::poison(dst);
    cuda::repack_for_device(type, src.get(), 301, dst.get(), nullptr);
    ASSERT_EQ(test::to_host(dst, dst.size()), raw) << tensor_type_name(type);
  }
}

// The load's path: raw blocks through a small ring of small staging buffers into one shared
// scratch buffer, each tensor repacked into its own buffer by the copy's follow-up; tensor sizes
// are no multiple of the chunk, so pieces straddle chunks and chunks hold several tensors.
TEST(RepackForDevice, ThroughStagedUploadIntoSharedScratch) {
  PIPELLM_REQUIRE_GPU();
  struct Tensor {
    TensorType type;
    int64_t nb, experts;
    std::vector<uint8_t> raw;
    cuda::DeviceBuffer<uint8_t> dst;
  };
  std::vector<Tensor> ts;
  size_t total = 0, scratch_bytes = 0;
  for (TensorType type : kRepacked) {
    for (int64_t experts : {int64_t{1}, int64_t{3}}) {
      for (int64_t nb : {int64_t{5}, int64_t{777}}) {
        Tensor t{type, nb, experts, test::random_blocks(type, nb * experts), {}};
        t.dst.resize(t.raw.size());
        test::poison(t.dst);
        total += t.raw.size();
        scratch_bytes = std::max(scratch_bytes, t.raw.size());
        ts.push_back(std::move(t));
      }
    }
  }
  cuda::Stream s;
  cuda::DeviceBuffer<uint8_t> scratch(scratch_bytes);
  for (size_t chunk : {size_t{4096 + 13}, size_t{1} << 20}) {
    for (Tensor& t : ts) test::poison(t.dst);
    cuda::StagedUploadOptions opt;
    opt.chunk_bytes = chunk;
    opt.buffers = 3;
    opt.threads = 3;
    cuda::StagedUploader up(total, s.get(), opt);
    for (Tensor& t : ts) {
      ASSERT_NE(t.raw.size() % up.chunk_bytes(), 0u);
      up.copy(t.raw.data(), t.raw.size(), scratch.get(), [&t, &scratch, &s] {
        cuda::repack_for_device(t.type, scratch.get(), t.nb, t.dst.get(), s.get(), t.experts);
      });
    }
    up.finish();
    for (const Tensor& t : ts) {
      ASSERT_EQ(test::to_host(t.dst, t.dst.size()), host_repack(t.type, t.raw, t.nb, t.experts))
          << tensor_type_name(t.type) << ", " << t.experts << " x " << t.nb << " blocks, chunk " << chunk;
    }
  }
}

}  // namespace
}  // namespace pipellm

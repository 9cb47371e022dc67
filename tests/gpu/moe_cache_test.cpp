// The expert cache's kernels (kernels/cuda/moe_cache.h) against their CPU references
// (kernels/cpu/moe_cache.h), bit for bit, on random routes over 64 experts, a third cached.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/moe_cache.h"
#include "kernels/cuda/moe_cache.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

TEST(MoeCacheKernels, SplitAndBiasMatchTheCpu) {
  PIPELLM_REQUIRE_GPU();
  constexpr int X = 64, P = 1000;
  constexpr int64_t N = 96;
  std::mt19937 rng(3);
  std::vector<int32_t> slot_of(X, -1), ids(P);
  for (int e = 0; e < X; e += 3) slot_of[e] = e / 3 + 1;  // slot 0 is the cache's zero slot
  std::vector<float> w(P), bias(X * N), y(P * N);
  for (int p = 0; p < P; ++p) {
    ids[p] = p % 17 == 0 ? -1 : static_cast<int32_t>(rng() % X);
    w[p] = static_cast<float>(rng() % 1000) / 1000.0f;
  }
  for (float& b : bias) b = static_cast<float>(rng() % 2000) / 1000.0f - 1.0f;
  for (float& v : y) v = static_cast<float>(rng() % 2000) / 1000.0f - 1.0f;
  std::vector<int32_t> gpu_ref(P), host_ref(P);
  std::vector<float> gw_ref(P);
  moe_cache_split(ids.data(), w.data(), slot_of.data(), X, P, gpu_ref.data(), gw_ref.data(), host_ref.data());

  auto d_ids = test::to_device(ids);
  auto d_w = test::to_device(w);
  auto d_slot = test::to_device(slot_of);
  cuda::DeviceBuffer<int32_t> d_gpu(P), d_host(P);
  cuda::DeviceBuffer<float> d_gw(P);
  cuda::Stream s;
  cuda::moe_cache_split(d_ids.get(), d_w.get(), d_slot.get(), X, P, d_gpu.get(), d_gw.get(), d_host.get(),
                        cuda::Launch(s.get(), false));
  s.synchronize();
  EXPECT_EQ(test::to_host(d_gpu, P), gpu_ref);
  EXPECT_EQ(test::to_host(d_gw, P), gw_ref);
  EXPECT_EQ(test::to_host(d_host, P), host_ref);

  // The bias by real id, over the pairs with a valid id.
  std::vector<int32_t> valid(ids);
  for (int32_t& e : valid) e = e < 0 ? 0 : e;
  std::vector<float> y_ref = y;
  moe_add_bias(y_ref.data(), bias.data(), valid.data(), P, N);
  auto d_y = test::to_device(y);
  auto d_bias = test::to_device(bias);
  auto d_valid = test::to_device(valid);
  cuda::moe_add_bias(d_y.get(), d_bias.get(), d_valid.get(), P, N, cuda::Launch(s.get(), false));
  s.synchronize();
  EXPECT_EQ(test::to_host(d_y, y.size()), y_ref);
}

}  // namespace
}  // namespace pipellm

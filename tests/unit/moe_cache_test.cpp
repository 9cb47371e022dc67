// The expert cache's pair split and per-expert bias (kernels/cpu/moe_cache.h), by hand: experts 1
// and 3 of 4 cached in slots 5 and 2, a padding id (-1) and an id out of range.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/moe_cache.h"

namespace pipellm {
namespace {

TEST(MoeCache, SplitsPairsBetweenCacheAndHost) {
  const std::vector<int32_t> slot_of = {-1, 5, -1, 2};
  const std::vector<int32_t> ids = {0, 1, 3, 2, -1, 7};
  const std::vector<float> w = {0.5f, 0.25f, 0.125f, 0.0625f, 1.0f, 2.0f};
  std::vector<int32_t> gpu(6, 99), host(6, 99);
  std::vector<float> gw(6, 99.0f);
  moe_cache_split(ids.data(), w.data(), slot_of.data(), 4, 6, gpu.data(), gw.data(), host.data());
  EXPECT_EQ(gpu, (std::vector<int32_t>{0, 5, 2, 0, 0, 0}));
  EXPECT_EQ(gw, (std::vector<float>{0.0f, 0.25f, 0.125f, 0.0f, 0.0f, 0.0f}));
  EXPECT_EQ(host, (std::vector<int32_t>{0, -1, -1, 2, -1, -1}));
}

TEST(MoeCache, AddsEachPairsExpertBias) {
  const std::vector<float> bias = {1, 2, 10, 20, 100, 200};  // 3 experts x 2
  const std::vector<int32_t> ids = {2, 0};
  std::vector<float> y = {0.5f, 0.5f, -1.0f, -1.0f};
  moe_add_bias(y.data(), bias.data(), ids.data(), 2, 2);
  EXPECT_EQ(y, (std::vector<float>{100.5f, 200.5f, 0.0f, 1.0f}));
}

}  // namespace
}  // namespace pipellm

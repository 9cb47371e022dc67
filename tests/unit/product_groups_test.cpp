// How products of one input split into launches (engine/cuda/product_groups.h): hand-computed
// groupings of q/k/v-like and DeltaNet-like lists.
#include "engine/cuda/product_groups.h"

#include <gtest/gtest.h>

#include <vector>

namespace pipellm {
namespace {

using cuda::ProductKey;

// The launch sizes for outs, in order.
std::vector<size_t> launches(const std::vector<ProductKey>& outs, bool can_share) {
  std::vector<size_t> sizes;
  for (size_t i = 0; i < outs.size();) {
    const size_t j = cuda::shared_launch_end(outs, i, can_share);
    EXPECT_GT(j, i);
    sizes.push_back(j - i);
    i = j;
  }
  return sizes;
}

TEST(ProductGroups, NeighboursOfOneTypeShareUpToThreeALaunch) {
  const TensorType A = TensorType::Q4_K, B = TensorType::Q6_K;
  using V = std::vector<size_t>;
  // q, k, v of one type: one launch; v of another: q+k, then v.
  EXPECT_EQ(launches({{A, 4096, false}, {A, 4096, false}, {A, 4096, false}}, true), V({3}));
  EXPECT_EQ(launches({{A, 4096, false}, {A, 4096, false}, {B, 4096, false}}, true), V({2, 1}));
  // Only neighbours: A B A takes three launches.
  EXPECT_EQ(launches({{A, 4096, false}, {B, 4096, false}, {A, 4096, false}}, true), V({1, 1, 1}));
  // DeltaNet's four in-projections: qkv + gate (Q4_K), alpha + beta (Q6_K); four alike: 3 + 1.
  EXPECT_EQ(launches({{A, 2048, false}, {A, 2048, false}, {B, 2048, false}, {B, 2048, false}}, true), V({2, 2}));
  EXPECT_EQ(launches({{A, 2048, false}, {A, 2048, false}, {A, 2048, false}, {A, 2048, false}}, true), V({3, 1}));
  // Another width, an accumulating product, or a kernel that takes one matrix: alone.
  EXPECT_EQ(launches({{A, 2048, false}, {A, 4096, false}}, true), V({1, 1}));
  EXPECT_EQ(launches({{A, 4096, false}, {A, 4096, true}, {A, 4096, false}}, true), V({1, 1, 1}));
  EXPECT_EQ(launches({{A, 4096, true}, {A, 4096, false}}, true), V({1, 1}));
  EXPECT_EQ(launches({{A, 4096, false}, {A, 4096, false}, {A, 4096, false}}, false), V({1, 1, 1}));
}

}  // namespace
}  // namespace pipellm

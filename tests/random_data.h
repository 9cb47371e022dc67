// Seeded random inputs for op tests (CPU and GPU): the same seed gives the same data everywhere.
#pragma once
#include <cstddef>
#include <random>
#include <vector>

namespace pipellm::test {

inline std::vector<float> normal_vec(size_t n, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<float> uniform_vec(size_t n, std::mt19937_64& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace pipellm::test

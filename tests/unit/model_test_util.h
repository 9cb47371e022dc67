// Helpers for the model tests: reading llama.cpp's reference outputs, comparing logits.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/unit/test_data.h"

namespace pipellm::test {

// The fixture models (tests/data/fixtures.tar.xz, models/).
inline const std::vector<std::string>& fixture_models() {
  static const std::vector<std::string> names = {
      "tiny-llama-F32",    "tiny-llama-F16",    "tiny-llama-BF16",   "tiny-llama-Q8_0",   "tiny-llama-Q4_0",
      "tiny-llama-Q4_1",   "tiny-llama-Q5_0",   "tiny-llama-Q5_1",   "tiny-llama-Q2_K",   "tiny-llama-Q3_K_M",
      "tiny-llama-Q4_K_M", "tiny-llama-Q5_K_M", "tiny-llama-Q6_K",   "tiny-llama-IQ4_NL", "tiny-llama-IQ4_XS",
      "tiny-qwen2-Q4_K_M", "tiny-qwen2-Q8_0",   "tiny-qwen3-Q4_K_M", "tiny-qwen3-Q8_0",   "tiny-tied-Q4_K_M",
      "tiny-tied-Q8_0"};
  return names;
}

inline std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<int32_t> ids;
  int32_t v;
  while (in >> v) ids.push_back(v);
  return ids;
}

inline std::vector<float> read_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path);
  const auto size = static_cast<size_t>(in.tellg());
  std::vector<float> v(size / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return v;
}

struct GreedyRef {
  std::vector<int32_t> ids;
  std::vector<double> gaps;
};

inline GreedyRef read_greedy(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  GreedyRef g;
  std::string line;
  std::getline(in, line);
  std::istringstream a(line);
  for (int32_t v; a >> v;) g.ids.push_back(v);
  std::getline(in, line);
  std::istringstream b(line);
  for (double v; b >> v;) g.gaps.push_back(v);
  return g;
}

inline double rel_rms(const float* a, const float* ref, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

inline int argmax(const float* x, size_t n) {
  return static_cast<int>(std::max_element(x, x + n) - x);
}

// Best minus second-best value.
inline double top_gap(const float* x, size_t n) {
  double b1 = -1e300, b2 = -1e300;
  for (size_t i = 0; i < n; ++i) {
    if (x[i] > b1) {
      b2 = b1;
      b1 = x[i];
    } else if (x[i] > b2) {
      b2 = x[i];
    }
  }
  return b1 - b2;
}

}  // namespace pipellm::test

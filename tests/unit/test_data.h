// Paths of the test fixtures (extracted from tests/data/fixtures.tar.xz at configure time), and small
// helpers the unit tests share.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace pipellm::test {

inline std::string testdata(const std::string& rel) { return std::string(PIPELLM_TESTDATA) + "/" + rel; }
// A fixture's folder under the test data: "" (fixtures, fixtures-arch) or "next/" (fixtures-next).
inline std::string fixture_dir(const std::string& name) {
  for (const char* next : {"tiny-qwen35", "tiny-gemma4"}) {
    if (name.rfind(next, 0) == 0) return "next/";
  }
  return "";
}
inline std::string model_path(const std::string& name) { return testdata(fixture_dir(name) + "models/" + name + ".gguf"); }
// ref/<name><ext> of a fixture model (.tokens, .logits.f32, .greedy).
inline std::string fixture_ref(const std::string& name, const std::string& ext) {
  return testdata(fixture_dir(name) + "ref/" + name + ext);
}

// A per-layer "streamed" mask written as a string, 'S' for streamed ("RRSS": two resident, two
// streamed): the VRAM planners' tests.
inline std::vector<bool> mask(const std::string& s) {
  std::vector<bool> m;
  for (char c : s) m.push_back(c == 'S');
  return m;
}

// n normal floats of standard deviation `scale`, the same for the same seed.
inline std::vector<float> random_vec(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace pipellm::test

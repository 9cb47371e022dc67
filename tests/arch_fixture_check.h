// The newer architectures' fixtures (tests/data/fixtures-arch.tar.xz) and their per-file bounds
// (ref/limits.json, explained in shared/fixtures/README.md): shared by the CPU and GPU tests.
//   - every position's logits within rel_rms (relative RMS) of llama.cpp's;
//   - argmax agreement at >= 95% of the positions whose reference top-1/top-2 gap >= clear_gap;
//   - greedy ids equal up to the first step whose gap is under clear_gap or, for MoE files,
//     whose routing gap (line 3 of .greedy) is under 0.1.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model/batch.h"
#include "tests/unit/model_test_util.h"

namespace pipellm::test {

inline const std::vector<std::string>& arch_fixture_models() {
  static const std::vector<std::string> names = {
      "tiny-gemma3-Q4_K_M",   "tiny-phi3-Q4_K_M", "tiny-qwen3moe-Q4_K_M",  "tiny-llamamoe-Q4_K_M",
      "tiny-gptoss-MXFP4_MOE", "tiny-qwen35-F16",  "tiny-qwen35-Q4_K_M", "tiny-qwen35moe-Q4_K_M",
      "tiny-gemma4-Q4_K_M",   "tiny-gemma4moe-Q4_K_M"};
  return names;
}

struct ArchLimits {
  double rel_rms = 0.0;
  double clear_gap = 0.0;
};

inline ArchLimits arch_limits(const std::string& name) {
  const std::string path = testdata(fixture_dir(name) + "ref/limits.json");
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  const nlohmann::json j = nlohmann::json::parse(in);
  const auto& e = j.at(name);
  return {e.at("rel_rms").get<double>(), e.at("clear_gap").get<double>()};
}

// How many reference greedy steps are clear enough to compare.
inline size_t clear_greedy_steps(const std::string& name, double clear_gap) {
  std::ifstream in(fixture_ref(name, ".greedy"));
  std::string l1, l2, l3;
  std::getline(in, l1);
  std::getline(in, l2);
  std::getline(in, l3);
  std::istringstream gaps(l2), routing(l3);
  size_t n = 0;
  for (double g; gaps >> g; ++n) {
    double r = 1.0;
    if (!l3.empty() && !(routing >> r)) r = 1.0;
    if (g < clear_gap || r < 0.1) break;
  }
  return n;
}

using ForwardFn = std::function<void(const Batch&, std::vector<float>&)>;
// One greedy decode step at (token, pos); returns the next id.
using DecodeFn = std::function<int32_t(int32_t token, int32_t pos)>;

// The prompt in one batch against the reference logits; then the clear greedy steps through
// `decode`. Prints a summary line.
inline void check_arch_fixture(const std::string& name, int n_vocab, const ForwardFn& forward,
                               const DecodeFn& decode) {
  const ArchLimits lim = arch_limits(name);
  const auto tokens = read_ids(fixture_ref(name, ".tokens"));
  const auto ref = read_f32(fixture_ref(name, ".logits.f32"));
  const size_t V = static_cast<size_t>(n_vocab);
  ASSERT_EQ(ref.size(), tokens.size() * V);
  std::vector<float> logits;
  forward(Batch::sequence(tokens, 0, 0, /*all_logits=*/true), logits);
  ASSERT_EQ(logits.size(), ref.size());
  double worst = 0.0;
  int considered = 0, agreed = 0;
  for (size_t p = 0; p < tokens.size(); ++p) {
    const float* a = logits.data() + p * V;
    const float* r = ref.data() + p * V;
    const double e = rel_rms(a, r, V);
    worst = std::max(worst, e);
    EXPECT_LT(e, lim.rel_rms) << name << " position " << p;
    if (top_gap(r, V) >= lim.clear_gap) {
      ++considered;
      agreed += argmax(a, V) == argmax(r, V) ? 1 : 0;
    }
  }
  ASSERT_GT(considered, 0);
  EXPECT_GE(agreed, 0.95 * considered) << name << ": argmax agreed at " << agreed << "/" << considered;

  const auto greedy = read_greedy(fixture_ref(name, ".greedy"));
  const size_t steps = clear_greedy_steps(name, lim.clear_gap);
  int32_t cur = argmax(logits.data() + (tokens.size() - 1) * V, V);
  int32_t pos = static_cast<int32_t>(tokens.size());
  for (size_t step = 0; step < steps; ++step) {
    ASSERT_EQ(cur, greedy.ids[step]) << name << ": greedy step " << step;
    if (step + 1 < steps) cur = decode(cur, pos++);
  }
  std::printf("[ %s ] worst rel RMS %.4f (bound %.3f), argmax %d/%d, greedy %zu clear steps equal\n", name.c_str(),
              worst, lim.rel_rms, agreed, considered, steps);
}

// The prompt again in chunks of each size (a stage's different product paths), every position's
// logits within the file's bound.
inline void check_arch_fixture_chunks(const std::string& name, int n_vocab, const ForwardFn& forward,
                                      const std::vector<size_t>& chunks) {
  const size_t V = static_cast<size_t>(n_vocab);
  const auto tokens = read_ids(fixture_ref(name, ".tokens"));
  const auto ref = read_f32(fixture_ref(name, ".logits.f32"));
  const double bound = arch_limits(name).rel_rms;
  std::vector<float> part_logits;
  for (const size_t chunk : chunks) {
    for (size_t c0 = 0; c0 < tokens.size(); c0 += chunk) {
      const size_t c1 = std::min(tokens.size(), c0 + chunk);
      const std::vector<int32_t> part(tokens.begin() + c0, tokens.begin() + c1);
      forward(Batch::sequence(part, static_cast<int32_t>(c0), 0, true), part_logits);
      for (size_t p = c0; p < c1; ++p) {
        EXPECT_LT(rel_rms(part_logits.data() + (p - c0) * V, ref.data() + p * V, V), bound)
            << name << " chunks of " << chunk << ", position " << p;
      }
    }
  }
}

}  // namespace pipellm::test

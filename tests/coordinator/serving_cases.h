// The 16 concurrent requests of the end-to-end tests (different prompts, greedy and seeded
// sampling, lengths) and the single-process engine's answer to each, shared by the in-process
// and the mpirun backends' tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/cpu/cpu_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/coordinator/coordinator_process.h"

namespace pipellm::test {

struct Case {
  std::string prompt;
  float temperature;
  int top_k;
  float top_p;
  float min_p;
  float repeat_penalty;
  uint64_t seed;
  int max_tokens;
};

std::vector<Case> cases16();
pipellm::v1::GenerateRequest request_of(const Case& c);
// engine/runtime generate() for the same request (ignore_eos, the case's sampling).
std::vector<int32_t> reference(CpuModel& m, const Tokenizer& tok, const Case& c);

// Runs cases16() as 16 concurrent streams against `coord` and checks each against the
// single-process engine on `model` (context n_ctx), then that seeded cases are reproducible.
void expect_concurrent_streams_match(CoordinatorProcess& coord, const std::string& model, int n_ctx);

}  // namespace pipellm::test

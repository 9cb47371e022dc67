// The 16 concurrent requests of the end-to-end tests (different prompts, greedy and seeded
// sampling with every sampling parameter, lengths), the single-process reference for each
// (tests/reference_generate.h) and `pipellm generate`'s answer to each, shared by the in-process
// and the mpirun backends' tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/cpu/cpu_model.h"
#include "engine/runtime/sampling_spec.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/coordinator/coordinator_process.h"

namespace pipellm::test {

// One request. The fields after max_tokens default to "no penalty" (penalty_last_n: the
// server's and the CLI's default window).
struct Case {
  std::string prompt;
  float temperature;
  int top_k;
  float top_p;
  float min_p;
  float repeat_penalty;
  uint64_t seed;
  int max_tokens;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int penalty_last_n = 64;
};

std::vector<Case> cases16();
// Every sampling field set explicitly; ignore_eos.
pipellm::v1::GenerateRequest request_of(const Case& c);
SamplingSpec spec_of(const Case& c);
// test::reference_generate (forward + host Sampler, no runtime) for the case's prompt (BOS added).
std::vector<int32_t> reference(CpuModel& m, const Tokenizer& tok, const Case& c);

// `pipellm generate -m MODEL --ctx N --threads 1 --print-ids --ignore-eos -n ... --temp ...
// --seed ...` with every sampling flag of the case; the prompt as text (-p), or as token ids
// (--ids-file) when `prompt_ids` is given. Returns the printed ids; a failed run is a test
// failure (the ids are then empty).
std::vector<int32_t> cli_generate(const std::string& model_file, int n_ctx, const Case& c,
                                  const std::vector<int32_t>* prompt_ids = nullptr);

// Runs cases16() as 16 concurrent streams against `coord` and checks each against the
// single-process reference on `model_file` (context n_ctx) and against `pipellm generate`, then
// that seeded cases are reproducible.
void expect_concurrent_streams_match(CoordinatorProcess& coord, const std::string& model_file, int n_ctx);

}  // namespace pipellm::test

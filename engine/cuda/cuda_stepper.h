// The GPU decode path for generate(): a TokenStepper over CudaStage::decode (one CUDA-graph
// replay per token, sampled on the GPU; only the id comes back), and the test of whether the
// GPU sampler draws from the distribution the host sampler's settings ask for.
#pragma once
#include <optional>

#include "engine/cuda/cuda_stage.h"
#include "engine/runtime/generator.h"
#include "engine/runtime/sampler.h"

namespace pipellm::cuda {

// The GPU sampler's equivalent of `p`, or nothing when it has none: penalties (they need the
// host's token window), or a chain order the GPU sampler does not implement. The GPU applies
// top_k, then top_p, then min_p, with the temperature either before top_p and min_p or after
// all filters (greedy: any chain).
std::optional<SamplingParams> gpu_sampling_for(const SamplerParams& p);

class CudaStepper : public TokenStepper {
 public:
  CudaStepper(CudaStage& stage, const SamplingParams& sp) : stage_(stage), sp_(sp) {}
  int32_t step(int32_t token, int pos, int slot) override {
    int32_t next = 0;
    stage_.decode(&token, &pos, &slot, 1, &next, sp_);
    return next;
  }

 private:
  CudaStage& stage_;
  SamplingParams sp_;
};

}  // namespace pipellm::cuda

// This rank's Stage: the CPU backend (engine/pipeline/stage_factory.h) or, when the CUDA engine
// is built, the CUDA one for `device: cuda:N`. Both run under the same StageRunner.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "engine/pipeline/stage_factory.h"

namespace pipellm {

// A CUDA stage without vram_budget streams the layers that do not fit its GPU's free memory
// (auto-fit, engine/cuda/stage_fit.h); `log` gets that decision and the stage's device memory
// block (null: silent).
std::unique_ptr<Stage> make_stage(const StageSetup& setup, const StageSpec& spec, ThreadPool& pool,
                                  const std::function<void(const std::string&)>& log = {});

}  // namespace pipellm

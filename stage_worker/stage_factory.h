// This rank's Stage: the CPU backend (engine/pipeline/stage_factory.h) or, when the CUDA engine
// is built, the CUDA one for `device: cuda:N`. Both run under the same StageRunner.
#pragma once
#include <memory>

#include "engine/pipeline/stage_factory.h"

namespace pipellm {

std::unique_ptr<Stage> make_stage(const StageSetup& setup, const StageSpec& spec, ThreadPool& pool);

}  // namespace pipellm

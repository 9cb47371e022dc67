// llama.cpp's expert placement flags (--cpu-moe/-cmoe, --n-cpu-moe/-ncmoe N, -ot/--override-tensor
// PATTERN=BUFFER, repeatable) into the engine's ExpertPlacementFlags (engine/model/
// expert_placement.h), for pipellm and pipellm-coordinator. Library pipellm_flags_engine.
#pragma once
#include "engine/model/expert_placement.h"

namespace CLI {
class App;
}  // namespace CLI

namespace pipellm::flags {

// A malformed -ot entry is a usage error naming it.
void add_expert_flags(CLI::App& app, ExpertPlacementFlags& f);

}  // namespace pipellm::flags

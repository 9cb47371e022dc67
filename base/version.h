// The PipeLLM version every program reports with --version (the CMake project's version).
#pragma once

namespace pipellm {

const char* pipellm_version();

}  // namespace pipellm

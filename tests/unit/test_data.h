// Paths of the test fixtures (extracted from tests/data/fixtures.tar.xz at configure time).
#pragma once
#include <string>

namespace pipellm::test {

inline std::string testdata(const std::string& rel) { return std::string(PIPELLM_TESTDATA) + "/" + rel; }
inline std::string model_path(const std::string& name) { return testdata("models/" + name + ".gguf"); }

}  // namespace pipellm::test

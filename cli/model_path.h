// What is wrong with a model path, said precisely: "does not exist" was printed for a device
// (-m /dev/zero), a directory and a symlink loop alike.
#pragma once
#include <string>

namespace pipellm::cli {

// "" when `path` is a regular file (after following symlinks) that this process may read; else
// the problem, e.g. "is a directory, not a GGUF file", "is a character device, not a regular
// file", "is a symlink loop", "does not exist", "cannot be read: Permission denied".
std::string model_path_problem(const std::string& path);

}  // namespace pipellm::cli

// Test helper: runs the `pipellm` binary as a user would (a shell command line) and returns its
// exit status, stdout and stderr.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace pipellm::test {

struct RunResult {
  int code;  // exit status; -1 when killed by a signal
  std::string out;
  std::string err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A path under the temporary directory unique to this process and call.
inline std::string temp_path(const std::string& name) {
  static int n = 0;
  return (std::filesystem::temp_directory_path() /
          ("pipellm_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++) + "_" + name))
      .string();
}

// `pipellm ARGS` through the shell (ARGS may redirect stdin).
inline RunResult run_cli(const std::string& args) {
  const std::string out = temp_path("out"), err = temp_path("err");
  const std::string cmd = std::string(PIPELLM_CLI_PATH) + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  RunResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace pipellm::test

// A child process started from an argument vector (posix_spawnp, never a shell), in its own
// process group so that terminate() reaches everything it started (mpirun and its ranks).
#pragma once
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pipellm::coord {

class ChildProcess {
 public:
  // argv[0] is looked up in PATH. `env` entries ("K=V") are added to this process's
  // environment. `output_file`: where stdout and stderr go (empty: inherited). Throws Error
  // naming the program.
  ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env,
               const std::string& output_file = "");
  ~ChildProcess();  // terminate(2 s)
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Non-blocking: nullopt while running, else "exit status N" / "killed by signal N (NAME)".
  std::optional<std::string> exited();
  // SIGTERM to the group, wait up to `grace`, then SIGKILL to the group; reaps the child.
  void terminate(std::chrono::milliseconds grace);

  static std::string describe_status(int wait_status);

 private:
  pid_t pid_ = -1;
  std::optional<std::string> exit_;
};

}  // namespace pipellm::coord

// How a LinkBackend gets a head stage that connects to its CoordinatorLink: a thread in this
// process, an `mpirun ... pipellm-stage` child, or nothing (stages started by hand, --attach).
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace pipellm::coord {

// A started head. exited() becomes non-empty (with a reason) once it has ended.
class HeadProcess {
 public:
  virtual ~HeadProcess() = default;
  virtual std::optional<std::string> exited() = 0;
  // Ends it: polite signal, `grace` to go, then force. Idempotent.
  virtual void terminate(std::chrono::milliseconds grace) = 0;
};

class HeadLauncher {
 public:
  virtual ~HeadLauncher() = default;
  // Starts a head that will connect to `coordinator_address` (host:port) and say `secret` in
  // its Hello (a child process gets it in $PIPELLM_LINK_SECRET, never in its arguments).
  // Throws Error.
  virtual std::unique_ptr<HeadProcess> launch(const std::string& coordinator_address, const std::string& secret) = 0;
  virtual std::string describe() const = 0;
};

}  // namespace pipellm::coord

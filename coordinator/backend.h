// What runs the model for the coordinator. A Backend delivers requests (token ids) to a head
// stage and reports its tokens back through a BackendListener. The RequestScheduler is the
// only listener; it does not know whether the head is a thread or an MPI job.
#pragma once
#include <cstdint>
#include <string>

#include "engine/link/messages.h"

namespace pipellm::coord {

class BackendListener {
 public:
  virtual ~BackendListener() = default;
  virtual void on_up(const link::HelloMsg& hello) = 0;  // the head is ready (again)
  // The head is gone: every request in flight is lost. `reason` says why (exit status, signal).
  virtual void on_down(const std::string& reason) = 0;
  // A generated token, with its log-probability (NaN when not asked: SamplingSpec::logprobs) and
  // alternatives (SamplingSpec::top_logprobs) as the head sent them.
  virtual void on_token(const link::TokenMsg& t) = 0;
  virtual void on_finished(const link::FinishedMsg& m) = 0;
  virtual void on_request_error(uint64_t id, const std::string& message) = 0;
};

enum class BackendState { Starting, Serving, Down, Stopped };
const char* backend_state_name(BackendState s);

class Backend {
 public:
  virtual ~Backend() = default;
  // Starts the head (asynchronously); events go to `listener`, which must outlive the backend.
  virtual void start(BackendListener* listener) = 0;
  // Queue a message for the head; never blocks on the network. Dropped when the head is down
  // (the listener has been or will be told on_down).
  virtual void submit(const link::SubmitRequest& r) = 0;
  virtual void cancel(uint64_t id) = 0;
  // Graceful stop: Shutdown to the head, then SIGTERM after a grace period, then SIGKILL.
  virtual void stop() = 0;
  virtual BackendState state() const = 0;
  virtual std::string describe() const = 0;  // "in-process", "mpirun -np 2 ...", "attach"
};

}  // namespace pipellm::coord

// Admission and routing of generation requests, shared by every front door (gRPC now, HTTP
// later). Requests (token ids) wait in a bounded FIFO queue and go to the backend while fewer
// than the head's max_sequences are in flight; the head's tokens come back to each request's
// RequestHandle. When the backend goes down every open request ends with Unavailable and the
// reason; new requests are refused until it is up again.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "coordinator/backend.h"
#include "coordinator/status.h"

namespace pipellm::coord {

struct StreamEvent {
  enum class Kind { Token, Finished, Failed } kind = Kind::Token;
  int32_t token = -1;              // Token
  float logprob = std::numeric_limits<float>::quiet_NaN();  // Token: when the request asked
  std::vector<TokenLogprob> top_logprobs{};  // Token: when the request asked for alternatives
  link::FinishedMsg finished;      // Finished
  Code code = Code::Ok;            // Failed
  std::string message;             // Failed
};

class RequestScheduler;

// One request's stream of events, read by its front-door handler thread.
class RequestHandle {
 public:
  uint64_t id() const { return id_; }
  // The next event, or nullopt after `timeout`. After a Finished/Failed event nothing follows.
  std::optional<StreamEvent> next(std::chrono::milliseconds timeout);
  // Ends the request (queued: removed; running: the head frees its slot at its next step).
  // Idempotent; a Finished(Cancelled) event follows unless the request had already ended.
  void cancel();

 private:
  friend class RequestScheduler;
  RequestHandle(RequestScheduler* s, uint64_t id) : sched_(s), id_(id) {}
  void push(StreamEvent e);

  RequestScheduler* sched_;
  uint64_t id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  bool ended_ = false;  // a final event was pushed
};

struct SchedulerOptions {
  int max_queue = 64;     // waiting requests beyond those in flight
  int max_in_flight = 0;  // 0: the head's max_sequences
};

struct SchedulerStats {
  int queued = 0;
  int in_flight = 0;
  uint64_t submitted = 0;
  uint64_t rejected = 0;
  int capacity = 0;      // sequences in flight at most (the head's slots; 0 while it is down)
  bool ever_up = false;  // the head has said Hello at least once (false: still loading the model)
};

class RequestScheduler : public BackendListener {
 public:
  RequestScheduler(Backend& backend, const SchedulerOptions& opt);
  ~RequestScheduler() override;

  // Queues a request (its id is assigned here). Throws RequestError: Unavailable (backend
  // down, or draining), ResourceExhausted (queue full).
  std::shared_ptr<RequestHandle> submit(link::SubmitRequest r);

  // The head's Hello while it is up.
  std::optional<link::HelloMsg> model() const;
  bool serving() const;
  std::string down_reason() const;
  SchedulerStats stats() const;
  // Stop admitting (graceful shutdown); open requests continue.
  void drain();
  // Waits until nothing is queued or in flight, up to `timeout`; true if idle.
  bool wait_idle(std::chrono::milliseconds timeout);
  // Cancels every open request.
  void cancel_all();

  // BackendListener
  void on_up(const link::HelloMsg& hello) override;
  void on_down(const std::string& reason) override;
  void on_token(const link::TokenMsg& t) override;
  void on_finished(const link::FinishedMsg& m) override;
  void on_request_error(uint64_t id, const std::string& message) override;

 private:
  friend class RequestHandle;
  struct Entry {
    std::shared_ptr<RequestHandle> handle;
    link::SubmitRequest req;
    bool dispatched = false;
  };
  void cancel(uint64_t id);
  void end(uint64_t id, StreamEvent e);  // removes the entry, pushes the final event
  void dispatch_locked();                // moves queued requests to the backend
  int capacity_locked() const;

  Backend& backend_;
  SchedulerOptions opt_;
  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::optional<link::HelloMsg> hello_;
  std::string down_reason_ = "the stages are starting";
  bool draining_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Entry> entries_;
  std::deque<uint64_t> queue_;  // FIFO of ids not yet dispatched
  int in_flight_ = 0;
  uint64_t submitted_ = 0, rejected_ = 0;
  bool ever_up_ = false;
};

}  // namespace pipellm::coord

// One admitted generation request as a front door reads it: the scheduler's events turned
// into visible text (stop strings cut, whole UTF-8 characters), the finish reason, or the
// failure. RAII: destroying an unfinished Generation cancels it, so a client that goes away
// frees its sequence at the stages' next step; its stream-limit lease is held until then.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "coordinator/access_control.h"
#include "coordinator/request_scheduler.h"
#include "coordinator/status.h"
#include "coordinator/text_stream.h"

namespace pipellm::coord {

class Generation {
 public:
  struct Update {
    std::string text;                   // newly visible text (may be empty)
    bool ended = false;
    link::FinishReason finish = link::FinishReason::Stop;  // when ended without failure
    std::optional<Code> failed;         // when ended by a failure (stages down, shutdown, ...)
    std::string message;                // the failure's message
  };

  Generation(std::shared_ptr<RequestHandle> handle, TextStream text, StreamLimiter::Lease lease, int prompt_tokens);
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // Waits up to `timeout` for the next event.
  Update poll(std::chrono::milliseconds timeout);
  // Cancels the request unless it has ended (idempotent).
  void abandon();

  bool ended() const { return ended_; }
  uint64_t id() const { return handle_->id(); }
  int prompt_tokens() const { return prompt_tokens_; }
  int generated_tokens() const { return generated_; }

 private:
  std::shared_ptr<RequestHandle> handle_;
  TextStream text_;
  StreamLimiter::Lease lease_;
  int prompt_tokens_ = 0;
  int generated_ = 0;
  bool ended_ = false;
};

}  // namespace pipellm::coord

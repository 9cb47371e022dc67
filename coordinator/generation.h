// One admitted generation request as a front door reads it: the scheduler's events turned
// into visible text (stop strings cut, whole UTF-8 characters), the token ids, the finish
// reason, or the failure. Both front doors (gRPC and HTTP) drive every request through this
// one path, so a stop string, a client cancel, the server cancelling, and the stages failing
// end a request the same way on both; each door only maps the outcome onto its wire (a gRPC
// status / an OpenAI error object, both carrying `Update::message`).
// RAII: destroying an unfinished Generation cancels it, so a client that goes away frees its
// sequence at the stages' next step; its stream-limit lease is held until then.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/access_control.h"
#include "coordinator/request_builder.h"
#include "coordinator/request_scheduler.h"
#include "coordinator/status.h"
#include "coordinator/text_stream.h"

namespace pipellm::coord {

class Generation {
 public:
  struct Update {
    std::string text;                   // newly visible text (may be empty)
    std::vector<int32_t> tokens;        // ids generated with this update (a stop's last one too)
    // With SamplingSpec::logprobs: each of `tokens`' natural-log probability (same order; NaN
    // if the stages sent none). Empty when the request did not ask.
    std::vector<float> logprobs;
    // With SamplingSpec::top_logprobs > 0: each of `tokens`' alternatives, most likely first (same
    // order). Empty when the request did not ask.
    std::vector<std::vector<TokenLogprob>> top_logprobs;
    bool ended = false;
    link::FinishReason finish = link::FinishReason::Stop;  // when ended without failure
    std::string stop_string;            // the stop string that ended the text, if one did
    std::optional<Code> failed;         // when ended by a failure (stages down, shutdown, ...)
    std::string message;                // the failure's message, the same text on every door
  };

  // Submits `prep` to the scheduler and follows it. Throws the scheduler's RequestError
  // (Unavailable: stages down or draining; ResourceExhausted: queue full); `lease` is released
  // then. The lease may be empty (a door that holds its stream slot elsewhere).
  static std::unique_ptr<Generation> start(RequestScheduler& sched, const ModelText& text, const PreparedRequest& prep,
                                           StreamLimiter::Lease lease);

  // `logprobs`: the request asked for log-probabilities (Update::logprobs is filled);
  // `top_logprobs` > 0: for alternatives too (Update::top_logprobs is filled).
  Generation(std::shared_ptr<RequestHandle> handle, TextStream text, StreamLimiter::Lease lease, int prompt_tokens,
             bool logprobs = false, int top_logprobs = 0);
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
  int cached_tokens() const { return cached_; }  // known once it has ended (FinishedMsg)
  TokenUsage usage() const { return {prompt_tokens_, generated_, cached_}; }
  bool logprobs() const { return logprobs_; }
  int top_logprobs() const { return top_logprobs_; }

 private:
  std::shared_ptr<RequestHandle> handle_;
  TextStream text_;
  StreamLimiter::Lease lease_;
  int prompt_tokens_ = 0;
  int generated_ = 0;
  int cached_ = 0;
  bool logprobs_ = false;
  int top_logprobs_ = 0;
  bool ended_ = false;
};

}  // namespace pipellm::coord

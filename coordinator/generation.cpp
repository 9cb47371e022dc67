#include "coordinator/generation.h"

namespace pipellm::coord {

std::unique_ptr<Generation> Generation::start(RequestScheduler& sched, const ModelText& text,
                                              const PreparedRequest& prep, StreamLimiter::Lease lease) {
  auto handle = sched.submit(prep.submit);
  return std::make_unique<Generation>(std::move(handle),
                                      TextStream(text.tokenizer(), prep.stop_strings, prep.submit.stop_ids, prep.shown_ids),
                                      std::move(lease), static_cast<int>(prep.submit.prompt.size()),
                                      prep.submit.sampling.logprobs, prep.submit.sampling.top_logprobs);
}

Generation::Generation(std::shared_ptr<RequestHandle> handle, TextStream text, StreamLimiter::Lease lease,
                       int prompt_tokens, bool logprobs, int top_logprobs)
    : handle_(std::move(handle)),
      text_(std::move(text)),
      lease_(std::move(lease)),
      prompt_tokens_(prompt_tokens),
      logprobs_(logprobs),
      top_logprobs_(top_logprobs) {}

Generation::~Generation() { abandon(); }

void Generation::abandon() {
  if (!ended_) {
    handle_->cancel();
    ended_ = true;
  }
  lease_.release();
}

Generation::Update Generation::poll(std::chrono::milliseconds timeout) {
  Update u;
  if (ended_) {
    u.ended = true;
    return u;
  }
  auto ev = handle_->next(timeout);
  if (!ev) return u;
  switch (ev->kind) {
    case StreamEvent::Kind::Token:
      ++generated_;
      u.tokens.push_back(ev->token);
      if (logprobs_) u.logprobs.push_back(ev->logprob);
      if (top_logprobs_ > 0) u.top_logprobs.push_back(std::move(ev->top_logprobs));
      u.text = text_.push(ev->token);
      if (text_.stopped()) {  // a stop string: the rest is not wanted
        handle_->cancel();
        ended_ = true;
        u.ended = true;
        u.finish = link::FinishReason::Stop;
        u.stop_string = text_.matched_stop();
      }
      break;
    case StreamEvent::Kind::Finished:
      ended_ = true;
      u.ended = true;
      u.text = text_.flush();
      u.finish = ev->finished.reason;
      cached_ = ev->finished.cached_tokens;
      if (ev->finished.reason == link::FinishReason::Cancelled) {
        // Not asked for by this client (its own cancel goes through abandon(), after which
        // nothing is read): the server cancelled it (shutting down).
        u.failed = Code::Unavailable;
        u.message = "the request was cancelled by the server (shutting down)";
      } else if (ev->finished.reason == link::FinishReason::Error) {
        u.failed = Code::Internal;
        u.message = "generation failed in the stages";
      }
      break;
    case StreamEvent::Kind::Failed:
      ended_ = true;
      u.ended = true;
      u.failed = ev->code;
      u.message = ev->message;
      break;
  }
  if (u.ended) lease_.release();
  return u;
}

}  // namespace pipellm::coord

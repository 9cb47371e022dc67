#include "coordinator/request_scheduler.h"

#include <spdlog/spdlog.h>

namespace pipellm::coord {

const char* code_name(Code c) {
  switch (c) {
    case Code::Ok: return "OK";
    case Code::InvalidArgument: return "INVALID_ARGUMENT";
    case Code::ResourceExhausted: return "RESOURCE_EXHAUSTED";
    case Code::Unavailable: return "UNAVAILABLE";
    case Code::Cancelled: return "CANCELLED";
    case Code::DeadlineExceeded: return "DEADLINE_EXCEEDED";
    case Code::Internal: return "INTERNAL";
  }
  return "?";
}

std::optional<StreamEvent> RequestHandle::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  StreamEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

void RequestHandle::push(StreamEvent e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    ended_ = e.kind != StreamEvent::Kind::Token;
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

void RequestHandle::cancel() { sched_->cancel(id_); }

RequestScheduler::RequestScheduler(Backend& backend, const SchedulerOptions& opt) : backend_(backend), opt_(opt) {}

RequestScheduler::~RequestScheduler() = default;

int RequestScheduler::capacity_locked() const {
  if (!hello_) return 0;
  return opt_.max_in_flight > 0 ? opt_.max_in_flight : std::max(1, hello_->max_sequences);
}

std::shared_ptr<RequestHandle> RequestScheduler::submit(link::SubmitRequest r) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) {
    ++rejected_;
    throw RequestError(Code::Unavailable, "the server is shutting down");
  }
  if (!hello_) {
    ++rejected_;
    throw RequestError(Code::Unavailable, "the model stages are not available: " + down_reason_);
  }
  if (static_cast<int>(queue_.size()) >= opt_.max_queue && in_flight_ >= capacity_locked()) {
    ++rejected_;
    throw RequestError(Code::ResourceExhausted, "the request queue is full (" + std::to_string(queue_.size()) +
                                                    " waiting, " + std::to_string(in_flight_) + " running)");
  }
  r.id = next_id_++;
  auto h = std::shared_ptr<RequestHandle>(new RequestHandle(this, r.id));
  entries_.emplace(r.id, Entry{h, std::move(r), false});
  queue_.push_back(h->id());
  ++submitted_;
  dispatch_locked();
  return h;
}

void RequestScheduler::dispatch_locked() {
  while (!queue_.empty() && hello_ && in_flight_ < capacity_locked()) {
    const uint64_t id = queue_.front();
    queue_.pop_front();
    auto it = entries_.find(id);
    if (it == entries_.end()) continue;
    it->second.dispatched = true;
    ++in_flight_;
    backend_.submit(it->second.req);
    it->second.req.prompt.clear();  // no longer needed here
  }
  if (queue_.empty() && in_flight_ == 0) idle_cv_.notify_all();
}

void RequestScheduler::cancel(uint64_t id) {
  std::shared_ptr<RequestHandle> h;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    h = it->second.handle;
    if (it->second.dispatched) {
      // The slot stays counted until the head confirms (Finished: cancelled).
      backend_.cancel(id);
    } else {
      for (auto q = queue_.begin(); q != queue_.end(); ++q) {
        if (*q == id) {
          queue_.erase(q);
          break;
        }
      }
      entries_.erase(it);
      if (queue_.empty() && in_flight_ == 0) idle_cv_.notify_all();
    }
  }
  StreamEvent e;
  e.kind = StreamEvent::Kind::Finished;
  e.finished.id = id;
  e.finished.reason = link::FinishReason::Cancelled;
  h->push(std::move(e));
}

void RequestScheduler::end(uint64_t id, StreamEvent e) {
  std::shared_ptr<RequestHandle> h;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    h = it->second.handle;
    if (it->second.dispatched) --in_flight_;
    entries_.erase(it);
    dispatch_locked();
  }
  h->push(std::move(e));
}

void RequestScheduler::on_up(const link::HelloMsg& hello) {
  std::lock_guard<std::mutex> lock(mu_);
  hello_ = hello;
  ever_up_ = true;
  down_reason_.clear();
  spdlog::info("scheduler: serving ({} sequences in flight at most, queue {})", capacity_locked(), opt_.max_queue);
  dispatch_locked();
}

void RequestScheduler::on_down(const std::string& reason) {
  std::vector<std::shared_ptr<RequestHandle>> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hello_.reset();
    down_reason_ = reason;
    for (auto& kv : entries_) open.push_back(kv.second.handle);
    entries_.clear();
    queue_.clear();
    in_flight_ = 0;
    idle_cv_.notify_all();
  }
  if (!open.empty()) spdlog::warn("scheduler: ending {} open request(s): {}", open.size(), reason);
  for (auto& h : open) {
    StreamEvent e;
    e.kind = StreamEvent::Kind::Failed;
    e.code = Code::Unavailable;
    e.message = "the model stages went down: " + reason;
    h->push(std::move(e));
  }
}

void RequestScheduler::on_token(const link::TokenMsg& t) {
  const uint64_t id = t.id;
  std::shared_ptr<RequestHandle> h;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    h = it->second.handle;
  }
  StreamEvent e;
  e.kind = StreamEvent::Kind::Token;
  e.token = t.token;
  e.logprob = t.logprob;
  e.top_logprobs = t.top_logprobs;
  h->push(std::move(e));
}

void RequestScheduler::on_finished(const link::FinishedMsg& m) {
  StreamEvent e;
  e.kind = StreamEvent::Kind::Finished;
  e.finished = m;
  end(m.id, std::move(e));
}

void RequestScheduler::on_request_error(uint64_t id, const std::string& message) {
  StreamEvent e;
  e.kind = StreamEvent::Kind::Failed;
  e.code = Code::InvalidArgument;
  e.message = message;
  if (message.rfind("forward pass failed", 0) == 0) e.code = Code::Internal;
  end(id, std::move(e));
}

std::optional<link::HelloMsg> RequestScheduler::model() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hello_;
}

bool RequestScheduler::serving() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hello_.has_value() && !draining_;
}

std::string RequestScheduler::down_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return down_reason_;
}

SchedulerStats RequestScheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {static_cast<int>(queue_.size()), in_flight_, submitted_, rejected_, capacity_locked(), ever_up_};
}

void RequestScheduler::drain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

bool RequestScheduler::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return queue_.empty() && in_flight_ == 0; });
}

void RequestScheduler::cancel_all() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : entries_) ids.push_back(kv.first);
  }
  for (uint64_t id : ids) cancel(id);
}

}  // namespace pipellm::coord

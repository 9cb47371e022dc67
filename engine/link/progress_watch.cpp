#include "engine/link/progress_watch.h"

#include <algorithm>

namespace pipellm::link {

namespace {

constexpr size_t kRecentSteps = 64;     // round trips remembered for the step estimate
constexpr size_t kMaxOutstanding = 4096;  // more steps in flight than any scheduler issues
constexpr double kDiagnoseAfter = 0.5;  // seconds overdue before the head looks for a culprit

double seconds(std::chrono::steady_clock::duration d) { return std::max(0.0, std::chrono::duration<double>(d).count()); }

}  // namespace

ProgressWatch::ProgressWatch(HeadLink& link, int n_stages, std::chrono::milliseconds interval, Diagnose diagnose)
    : link_(link), n_stages_(std::max(1, n_stages)), interval_(interval), diagnose_(std::move(diagnose)) {
  thread_ = std::thread([this] { run(); });
}

ProgressWatch::~ProgressWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ProgressWatch::enter_poll(int64_t issued, int64_t done, double head_step_seconds, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto remember = [&](double s) {
    recent_.push_back(s);
    if (recent_.size() > kRecentSteps) recent_.pop_front();
  };
  if (issued > issued_) {
    const int64_t k = issued - issued_;
    // Every rank computes the same tokens: the head's share of a step, times the ranks, is what
    // a round trip of it should take (known as soon as it is issued, before its result is).
    remember(std::max(0.0, head_step_seconds - head_seconds_) / static_cast<double>(k) * n_stages_);
    for (int64_t i = 0; i < k && out_.size() < kMaxOutstanding; ++i) out_.push_back(now);
  }
  if (done > done_) {
    for (int64_t i = 0; i < done - done_ && !out_.empty(); ++i) {
      remember(seconds(now - out_.front()));
      out_.pop_front();
    }
    last_done_ = now;
  }
  if (done >= issued) out_.clear();  // nothing in flight (one rank: steps finish inside the loop)
  issued_ = issued;
  done_ = done;
  head_seconds_ = head_step_seconds;
  in_poll_ = true;
}

void ProgressWatch::leave_poll(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  in_poll_ = false;
  left_poll_ = now;
}

ProgressMsg ProgressWatch::snapshot(Clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mu_);
  ProgressMsg m;
  m.steps_issued = issued_;
  m.steps_done = done_;
  if (!out_.empty()) m.waiting_seconds = seconds(now - std::max(out_.front(), last_done_));
  if (!in_poll_) m.busy_seconds = seconds(now - left_poll_);
  for (double s : recent_) m.step_seconds = std::max(m.step_seconds, s);
  return m;
}

void ProgressWatch::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    lock.unlock();
    ProgressMsg m = snapshot();
    if (diagnose_ && std::max(m.waiting_seconds, m.busy_seconds) > kDiagnoseAfter) m.suspect = diagnose_();
    try {
      link_.send(m);
    } catch (const LinkError&) {
      return;  // the coordinator is gone; the serving loop finds out by itself
    }
    lock.lock();
    cv_.wait_for(lock, interval_, [&] { return stopping_; });
  }
}

}  // namespace pipellm::link

// The head's heartbeat: a thread of its own that sends the coordinator a Progress message every
// `interval` (engine/link/messages.h), whatever the serving loop is doing. The loop (on the
// runner's thread) reports what it sees at each poll -- steps issued and done, the head's own
// compute time -- and the watch turns that into the figures the coordinator judges hangs by:
// how long steps have been in flight with nothing back, how long the head has been inside one
// step, and how long a step takes when things go well (the longest recent round trip).
//
// Why a thread: a stopped head process sends nothing (the coordinator notices the silence),
// while a head whose loop is merely busy in a long step, or waiting on a stuck rank, still
// says so, and says which rank it suspects (`Diagnose`, e.g. /proc of the ranks on its host).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "engine/link/coordinator_link.h"

namespace pipellm::link {

class ProgressWatch {
 public:
  using Clock = std::chrono::steady_clock;
  // Which rank holds the pipeline up ("rank 1 (pid 42) is stopped"), or "" when unknown.
  // Called from the watch's thread only while steps are overdue.
  using Diagnose = std::function<std::string()>;

  // Starts the thread; the first Progress goes out at once. `n_stages`: ranks in the pipeline.
  ProgressWatch(HeadLink& link, int n_stages, std::chrono::milliseconds interval, Diagnose diagnose = nullptr);
  ~ProgressWatch();  // stops and joins the thread
  ProgressWatch(const ProgressWatch&) = delete;
  ProgressWatch& operator=(const ProgressWatch&) = delete;

  // The serving loop enters its poll: totals as the head sees them now (issued: the head's own
  // step count; done: the tail's, from the step results; head_step_seconds: the head's compute).
  void enter_poll(int64_t issued, int64_t done, double head_step_seconds, Clock::time_point now = Clock::now());
  // The loop leaves its poll to compute and send steps.
  void leave_poll(Clock::time_point now = Clock::now());

  // The message as it would be sent at `now` (the thread sends exactly this; tests read it).
  ProgressMsg snapshot(Clock::time_point now = Clock::now()) const;

 private:
  void run();

  HeadLink& link_;
  const int n_stages_;
  const std::chrono::milliseconds interval_;
  Diagnose diagnose_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool in_poll_ = true;  // until the loop first leaves a poll, it is not inside a step
  Clock::time_point left_poll_{};
  int64_t issued_ = 0, done_ = 0;
  double head_seconds_ = 0.0;
  std::deque<Clock::time_point> out_;  // when each step still in flight was seen issued, oldest first
  Clock::time_point last_done_{};      // when a result last came back
  std::deque<double> recent_;          // the last round trips (seconds), newest last
  std::thread thread_;
};

}  // namespace pipellm::link

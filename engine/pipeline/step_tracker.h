// Where a rank's StageRunner is: how many steps it has finished, and whether it is inside one
// (which, since when). The runner writes it (StepTracker::Scope around each step); another
// thread reads it -- the rank heartbeat (engine/pipeline/rank_heartbeat.h) -- so every access
// takes the lock (a step costs far more than the lock).
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>

namespace pipellm {

class StepTracker {
 public:
  using Clock = std::chrono::steady_clock;

  struct State {
    int64_t steps_done = 0;
    bool in_step = false;
    int64_t step_id = 0;         // the step inside, when in_step
    double in_step_seconds = 0;  // how long it has been inside, when in_step
  };

  void begin(int64_t step_id, Clock::time_point now = Clock::now()) {
    std::lock_guard<std::mutex> lk(mu_);
    in_step_ = true;
    step_id_ = step_id;
    since_ = now;
  }
  void end() {
    std::lock_guard<std::mutex> lk(mu_);
    if (in_step_) ++steps_done_;
    in_step_ = false;
  }
  State read(Clock::time_point now = Clock::now()) const {
    std::lock_guard<std::mutex> lk(mu_);
    State s;
    s.steps_done = steps_done_;
    s.in_step = in_step_;
    s.step_id = in_step_ ? step_id_ : 0;
    s.in_step_seconds = in_step_ ? std::max(0.0, std::chrono::duration<double>(now - since_).count()) : 0.0;
    return s;
  }

  // begin() on construction, end() on destruction (a step left by an exception ends too);
  // nothing when `t` is null.
  class Scope {
   public:
    Scope(StepTracker* t, int64_t step_id) : t_(t) {
      if (t_ != nullptr) t_->begin(step_id);
    }
    ~Scope() {
      if (t_ != nullptr) t_->end();
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    StepTracker* t_;
  };

 private:
  mutable std::mutex mu_;
  int64_t steps_done_ = 0;
  bool in_step_ = false;
  int64_t step_id_ = 0;
  Clock::time_point since_{};
};

}  // namespace pipellm

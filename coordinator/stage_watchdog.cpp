#include "coordinator/stage_watchdog.h"

#include <algorithm>
#include <cstdio>

namespace pipellm::coord {

namespace {

constexpr size_t kMaxSuspect = 300;  // the head's words about a rank, as much as a message keeps
constexpr double kFreshHeartbeat = 1.0;  // seconds: four heartbeats; older figures are not extrapolated

std::string secs(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

double seconds(StageWatchdog::Clock::duration d) { return std::max(0.0, std::chrono::duration<double>(d).count()); }

}  // namespace

StageWatchdog::StageWatchdog(const HangPolicy& policy, int n_stages, Clock::time_point now)
    : policy_(policy), n_stages_(std::max(1, n_stages)), heard_(now) {}

void StageWatchdog::heard(Clock::time_point now) { heard_ = std::max(heard_, now); }

void StageWatchdog::progress(const link::ProgressMsg& m, Clock::time_point now) {
  heard(now);
  last_ = m;
  last_at_ = now;
}

std::chrono::duration<double> StageWatchdog::deadline() const {
  const double floor = std::chrono::duration<double>(policy_.floor).count();
  if (last_ && last_->step_seconds > 0.0) return std::chrono::duration<double>(std::max(floor, policy_.factor * last_->step_seconds));
  return std::chrono::duration<double>(std::max(floor, std::chrono::duration<double>(policy_.first_step).count()));
}

std::string StageWatchdog::deadline_text() const {
  const double d = deadline().count();
  if (last_ && last_->step_seconds > 0.0) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "deadline %.1f s: %.0fx the measured step of %.0f ms, at least %.1f s", d,
                  policy_.factor, 1e3 * last_->step_seconds, std::chrono::duration<double>(policy_.floor).count());
    return buf;
  }
  return "deadline " + secs(d) + ": no step measured yet in this launch";
}

std::string StageWatchdog::later_ranks(const std::string& suspect) const {
  if (!suspect.empty()) return suspect.substr(0, kMaxSuspect);
  if (n_stages_ == 2) return "rank 1";
  return "one of ranks 1-" + std::to_string(n_stages_ - 1) + " (the head cannot tell which)";
}

std::optional<std::string> StageWatchdog::hung(Clock::time_point now) const {
  const double silent = seconds(now - heard_);
  if (silent > std::chrono::duration<double>(policy_.floor).count()) {
    return "rank 0 (the head stage) is not responding: no message, not even its heartbeat, for " + secs(silent);
  }
  if (!last_) return std::nullopt;
  // The head's figures grow while its next heartbeat is on the way; once that is overdue, the
  // silence rule above speaks (a stopped head is "not responding", not "inside one step").
  const double age = seconds(now - last_at_);
  if (age > kFreshHeartbeat) return std::nullopt;
  const double limit = deadline().count();
  if (last_->waiting_seconds > 0.0 && last_->waiting_seconds + age > limit) {
    return "the pipeline made no progress for " + secs(last_->waiting_seconds + age) + " (" + deadline_text() +
           "): step " + std::to_string(last_->steps_done + 1) + " went out from rank 0 and did not come back; held up at " +
           later_ranks(last_->suspect);
  }
  if (last_->busy_seconds > 0.0 && last_->busy_seconds + age > limit) {
    return "rank 0 (the head stage) has been inside one step for " + secs(last_->busy_seconds + age) + " (" +
           deadline_text() + ")";
  }
  return std::nullopt;
}

}  // namespace pipellm::coord

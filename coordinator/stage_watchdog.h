// Whether the stages hang: the coordinator's judgement of the head's heartbeat (Progress,
// engine/link/progress_watch.h). A hung rank is treated like a dead one (LinkBackend goes down
// with the reason, open streams end UNAVAILABLE, the stages are relaunched when asked to).
//
// Deadlines come from the measured step time, with a floor: a step is overdue after
//   max(floor, factor x the head's recent step round trip)
// or, before any step was measured in this launch (weights warming up, graphs captured),
// after max(floor, first_step). Three things count as a hang, each naming the rank:
// - the head sends nothing for `floor` (its heartbeat thread stopped: rank 0 is stopped or gone),
// - steps in flight with no result back for the deadline (a later rank: the head's suspect --
//   from /proc for ranks on its host, from the rank heartbeats on any host: whose beats stopped,
//   who is inside one step past the others (stage_worker/serve_head.h, stuck_rank_diagnosis) --
//   or "rank 1" / "one of ranks 1-N" when it cannot tell, e.g. heartbeats could not be set up),
// - the head inside one step of its own for the deadline (rank 0).
#pragma once
#include <chrono>
#include <optional>
#include <string>

#include "engine/link/messages.h"

namespace pipellm::coord {

struct HangPolicy {
  std::chrono::milliseconds floor{3000};
  double factor = 8.0;
  std::chrono::milliseconds first_step{60000};
};

class StageWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  StageWatchdog(const HangPolicy& policy, int n_stages, Clock::time_point now);

  // Any frame from the head.
  void heard(Clock::time_point now);
  // A Progress frame (heard() too).
  void progress(const link::ProgressMsg& m, Clock::time_point now);
  // Why the stages count as hung at `now` (naming the rank), or nullopt.
  std::optional<std::string> hung(Clock::time_point now) const;
  // The deadline a step has at the moment (floor, measured step, or first-step allowance).
  std::chrono::duration<double> deadline() const;

 private:
  std::string deadline_text() const;
  std::string later_ranks(const std::string& suspect) const;

  HangPolicy policy_;
  int n_stages_;
  Clock::time_point heard_;
  std::optional<link::ProgressMsg> last_;
  Clock::time_point last_at_{};
};

}  // namespace pipellm::coord

// The hang judgement of coordinator/stage_watchdog.h on scripted heartbeats (issue 21 item 4):
// silence names rank 0, overdue steps name the head's suspect (or the only follower), the
// deadline follows the measured step time above the floor, and the first step of a launch has
// its own allowance.
#include <gtest/gtest.h>

#include "coordinator/stage_watchdog.h"

namespace pipellm::coord {
namespace {

using Clock = StageWatchdog::Clock;
using std::chrono::milliseconds;

HangPolicy policy() {
  HangPolicy p;
  p.floor = milliseconds(3000);
  p.factor = 8.0;
  p.first_step = milliseconds(60000);
  return p;
}

link::ProgressMsg progress(double waiting, double busy, double step, const std::string& suspect = "") {
  link::ProgressMsg m;
  m.steps_issued = 12;
  m.steps_done = 10;
  m.waiting_seconds = waiting;
  m.busy_seconds = busy;
  m.step_seconds = step;
  m.suspect = suspect;
  return m;
}

TEST(StageWatchdog, SilenceBeyondTheFloorNamesTheHead) {
  const auto t0 = Clock::now();
  StageWatchdog w(policy(), 2, t0);
  EXPECT_FALSE(w.hung(t0 + milliseconds(2900)));
  w.heard(t0 + milliseconds(2900));
  EXPECT_FALSE(w.hung(t0 + milliseconds(5800)));
  const auto why = w.hung(t0 + milliseconds(6000));
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("rank 0 (the head stage) is not responding"), std::string::npos) << *why;

  // A head stopped inside a step: its last heartbeat said "busy"; the silence names it, not
  // the busy figure extrapolated past the heartbeat.
  StageWatchdog s(policy(), 1, t0);
  s.progress(progress(0.0, 0.02, 0.020), t0);
  EXPECT_FALSE(s.hung(t0 + milliseconds(2990)));
  const auto stopped = s.hung(t0 + milliseconds(3010));
  ASSERT_TRUE(stopped);
  EXPECT_NE(stopped->find("is not responding"), std::string::npos) << *stopped;
}

TEST(StageWatchdog, OverdueStepsNameTheSuspectOrTheOnlyFollower) {
  const auto t0 = Clock::now();
  StageWatchdog two(policy(), 2, t0);
  two.progress(progress(2.2, 0.0, 0.010), t0);
  EXPECT_FALSE(two.hung(t0 + milliseconds(700)));  // 2.9 s waiting < the 3 s floor
  auto why = two.hung(t0 + milliseconds(900));
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("held up at rank 1"), std::string::npos) << *why;
  EXPECT_NE(why->find("step 11"), std::string::npos) << *why;

  StageWatchdog four(policy(), 4, t0);
  four.progress(progress(3.5, 0.0, 0.010), t0);
  why = four.hung(t0);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("one of ranks 1-3"), std::string::npos) << *why;
  four.progress(progress(3.5, 0.0, 0.010, "rank 2 (pid 7) is stopped (SIGSTOP or a debugger)"), t0);
  why = four.hung(t0);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("held up at rank 2 (pid 7) is stopped"), std::string::npos) << *why;
}

TEST(StageWatchdog, TheDeadlineFollowsTheMeasuredStep) {
  const auto t0 = Clock::now();
  StageWatchdog w(policy(), 2, t0);
  w.progress(progress(0.0, 0.0, 0.010), t0);
  EXPECT_DOUBLE_EQ(w.deadline().count(), 3.0);  // 8 x 10 ms is under the floor
  w.progress(progress(7.5, 0.0, 1.0), t0);      // 1 s steps: 8 s
  EXPECT_DOUBLE_EQ(w.deadline().count(), 8.0);
  EXPECT_FALSE(w.hung(t0 + milliseconds(400)));
  const auto why = w.hung(t0 + milliseconds(600));
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("8x the measured step of 1000 ms"), std::string::npos) << *why;
}

TEST(StageWatchdog, TheFirstStepHasItsAllowanceAndTheHeadItsOwnDeadline) {
  const auto t0 = Clock::now();
  StageWatchdog w(policy(), 1, t0);
  w.progress(progress(0.0, 30.0, 0.0), t0);  // warming up: no step measured yet
  EXPECT_FALSE(w.hung(t0));
  w.progress(progress(0.0, 61.0, 0.0), t0);
  auto why = w.hung(t0);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("no step measured yet"), std::string::npos) << *why;

  StageWatchdog h(policy(), 1, t0);
  h.progress(progress(0.0, 3.5, 0.020), t0);
  why = h.hung(t0);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("rank 0 (the head stage) has been inside one step"), std::string::npos) << *why;
}

}  // namespace
}  // namespace pipellm::coord

// Issue 21 item 4: a hung stage is treated like a dead one. `kill -STOP` of a rank (a follower,
// or the head itself) must end every open stream with UNAVAILABLE naming the rank within 5 s,
// turn health NOT_SERVING, and (with --restart-on-failure) relaunch the stages, after which
// requests succeed again. The stopped process is killed with its job (SIGKILL reaches it).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "tests/coordinator/coordinator_process.h"

namespace pipellm::test {
namespace {

namespace v1 = pipellm::v1;
using Clock = std::chrono::steady_clock;

// Stops a process for the test and makes sure it does not stay stopped whatever happens.
class Stopped {
 public:
  explicit Stopped(pid_t pid) : pid_(pid) { ok_ = ::kill(pid, SIGSTOP) == 0; }
  ~Stopped() {
    if (running(pid_)) ::kill(pid_, SIGKILL);
  }
  bool ok() const { return ok_; }

 private:
  pid_t pid_;
  bool ok_ = false;
};

std::string write_config(const TempDir& dir, int ranks) {
  const std::string cfg = dir.file("stages.yaml");
  std::ofstream out(cfg);
  out << "model: " << model_path("tiny-llama-Q8_0") << "\ncontext_length: 1024\nmax_sequences: 4\n"
      << "threads: 1\ntransport: mpi\nstages:\n";
  // The fixture has 2 layers: with three ranks, one each for the first two and the output head
  // alone on the last (as tests/mpi's ThreeRanksHeadOnlyTail).
  const int layers[][2] = {{0, 1}, {1, 2}, {2, 2}};
  for (int r = 0; r < ranks; ++r) {
    out << "  - device: cpu\n";
    if (ranks == 3) out << "    layers: [" << layers[r][0] << ", " << layers[r][1] << "]\n";
  }
  return cfg;
}

struct OpenStreams {
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
};

// `n` long streams, each past its first tokens.
OpenStreams open_streams(CoordinatorProcess& coord, int n) {
  OpenStreams s;
  for (int i = 0; i < n; ++i) {
    v1::GenerateRequest r;
    r.set_text("stream number " + std::to_string(i));
    r.mutable_sampling()->set_temperature(0.0f);
    r.set_max_tokens(900);
    r.set_ignore_eos(true);
    s.ctxs.push_back(std::make_unique<grpc::ClientContext>());
    s.ctxs.back()->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    s.readers.push_back(coord.stub().Generate(s.ctxs.back().get(), r));
  }
  v1::GenerateResponse m;
  for (auto& rd : s.readers) {
    for (int k = 0; k < 2; ++k) EXPECT_TRUE(rd->Read(&m));
  }
  return s;
}

// Every stream ends UNAVAILABLE with a message holding `words`; returns the seconds since `t0`.
double expect_unavailable(OpenStreams& s, Clock::time_point t0, const std::vector<std::string>& words) {
  v1::GenerateResponse m;
  for (size_t i = 0; i < s.readers.size(); ++i) {
    while (s.readers[i]->Read(&m)) {
    }
    const auto st = s.readers[i]->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << "stream " << i << ": " << st.error_message();
    for (const auto& w : words) EXPECT_NE(st.error_message().find(w), std::string::npos) << st.error_message();
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void expect_served_after_restart(CoordinatorProcess& coord) {
  ASSERT_TRUE(coord.wait_health("SERVING", 60000)) << coord.log();
  v1::GenerateRequest r;
  r.set_text("after the restart");
  r.set_max_tokens(3);
  r.set_ignore_eos(true);
  const auto res = generate(coord.stub(), r, 20000);
  EXPECT_TRUE(res.status.ok()) << res.status.error_message() << "\n" << coord.log();
  EXPECT_EQ(res.ids.size(), 3u);
}

TEST(Hang, AStoppedFollowerRankIsTreatedAsDead) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found";
  TempDir dir;
  const std::string pids = dir.file("stage.pid");  // rank r writes stage.pid.rank<r>
  CoordinatorProcess coord({"--config", write_config(dir, 2), "--backend", "mpirun", "--stage-bin", PIPELLM_STAGE_BIN,
                            "--stage-arg=--pid-file", "--stage-arg", pids, "--stage-arg=--debug-step-delay-ms",
                            "--stage-arg=20", "--restart-on-failure", "--shutdown-grace", "2"});
  ASSERT_TRUE(coord.wait_health("SERVING", 60000)) << coord.log();
  const pid_t head = read_pid(pids + ".rank0", 5000);
  const pid_t victim = read_pid(pids + ".rank1", 5000);
  ASSERT_GT(head, 0);
  ASSERT_GT(victim, 0);
  std::remove((pids + ".rank0").c_str());
  std::remove((pids + ".rank1").c_str());

  OpenStreams streams = open_streams(coord, 3);
  Stopped stopped(victim);
  ASSERT_TRUE(stopped.ok());
  const double s = expect_unavailable(streams, Clock::now(), {"hang", "rank 1", "is stopped"});
  EXPECT_LT(s, 5.0) << "streams ended " << s << " s after SIGSTOP\n" << coord.log();
  EXPECT_TRUE(coord.wait_health("NOT_SERVING", 2000)) << coord.log();

  // Relaunched: new ranks; the stopped one went with its job.
  ASSERT_GT(read_pid(pids + ".rank1", 30000), 0) << coord.log();
  expect_served_after_restart(coord);
  EXPECT_FALSE(running(victim)) << "the stopped rank outlived its job";
  EXPECT_FALSE(running(head)) << "the old head outlived its job";
  EXPECT_NE(coord.log().find("backend: down: the stages hang"), std::string::npos) << coord.log();
}

// A stopped rank the head cannot see in /proc (on another host; here the test switch
// PIPELLM_DIAGNOSE_NO_PROC turns /proc off) is named from the rank heartbeats: its beats stop.
TEST(Hang, AStoppedRankIsNamedFromItsHeartbeats) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found";
  TempDir dir;
  const std::string pids = dir.file("stage.pid");
  CoordinatorProcess coord({"--config", write_config(dir, 3), "--backend", "mpirun", "--stage-bin", PIPELLM_STAGE_BIN,
                            "--stage-arg=--pid-file", "--stage-arg", pids, "--stage-arg=--debug-step-delay-ms",
                            "--stage-arg=20", "--shutdown-grace", "2"},
                           {"PIPELLM_DIAGNOSE_NO_PROC=1"});
  ASSERT_TRUE(coord.wait_health("SERVING", 60000)) << coord.log();
  const pid_t victim = read_pid(pids + ".rank2", 5000);
  ASSERT_GT(victim, 0);
  OpenStreams streams = open_streams(coord, 2);
  Stopped stopped(victim);
  ASSERT_TRUE(stopped.ok());
  const double s = expect_unavailable(streams, Clock::now(),
                                      {"hang", "rank 2 on ", "(pid " + std::to_string(victim) + ") has sent no heartbeat"});
  EXPECT_LT(s, 5.0) << "streams ended " << s << " s after SIGSTOP\n" << coord.log();
  EXPECT_EQ(coord.log().find("is stopped (SIGSTOP"), std::string::npos) << "the /proc path spoke\n" << coord.log();
  EXPECT_EQ(coord.log().find("the head cannot tell which"), std::string::npos) << coord.log();
}

TEST(Hang, AStoppedHeadIsTreatedAsDead) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found";
  TempDir dir;
  const std::string pid_file = dir.file("head.pid");
  CoordinatorProcess coord({"--config", write_config(dir, 1), "--backend", "mpirun", "--np", "1", "--stage-bin",
                            PIPELLM_LINK_HEAD_BIN, "--stage-arg=--pid-file", "--stage-arg", pid_file,
                            "--stage-arg=--debug-step-delay-ms", "--stage-arg=20", "--restart-on-failure"});
  ASSERT_TRUE(coord.wait_health("SERVING", 60000)) << coord.log();
  const pid_t head = read_pid(pid_file, 5000);
  ASSERT_GT(head, 0);
  std::remove(pid_file.c_str());

  OpenStreams streams = open_streams(coord, 2);
  Stopped stopped(head);
  ASSERT_TRUE(stopped.ok());
  const double s = expect_unavailable(streams, Clock::now(), {"hang", "rank 0", "not responding"});
  EXPECT_LT(s, 5.0) << "streams ended " << s << " s after SIGSTOP\n" << coord.log();
  EXPECT_TRUE(coord.wait_health("NOT_SERVING", 2000)) << coord.log();
  ASSERT_GT(read_pid(pid_file, 30000), 0) << coord.log();
  expect_served_after_restart(coord);
  EXPECT_FALSE(running(head)) << "the stopped head outlived its job";
}

// An idle head that stops is noticed too (no request needed): health goes NOT_SERVING.
TEST(Hang, AnIdleStoppedHeadTurnsHealthNotServing) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found";
  TempDir dir;
  const std::string pid_file = dir.file("head.pid");
  CoordinatorProcess coord({"--config", write_config(dir, 1), "--backend", "mpirun", "--np", "1", "--stage-bin",
                            PIPELLM_LINK_HEAD_BIN, "--stage-arg=--pid-file", "--stage-arg", pid_file});
  ASSERT_TRUE(coord.wait_health("SERVING", 60000)) << coord.log();
  const pid_t head = read_pid(pid_file, 5000);
  ASSERT_GT(head, 0);
  Stopped stopped(head);
  ASSERT_TRUE(stopped.ok());
  const auto t0 = Clock::now();
  EXPECT_TRUE(coord.wait_health("NOT_SERVING", 5000)) << coord.log();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0);
  v1::GenerateRequest r;
  r.set_text("hi");
  const auto res = generate(coord.stub(), r, 5000);
  EXPECT_EQ(res.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(res.status.error_message().find("rank 0"), std::string::npos) << res.status.error_message();
}

}  // namespace
}  // namespace pipellm::test

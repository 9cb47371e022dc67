// Rank heartbeats (engine/pipeline/rank_heartbeat.h): the registry's judgement on a fake clock,
// the wire format against hostile bytes, and a server and senders over loopback sockets.
#include "engine/pipeline/rank_heartbeat.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

namespace pipellm::heartbeat {
namespace {

using std::chrono::milliseconds;

const std::string kToken(kTokenBytes, 'k');

Beat beat(uint32_t rank, uint64_t done, bool in_step = false, uint64_t step = 0, uint32_t ms = 0) {
  Beat b;
  b.rank = rank;
  b.pid = 1000 + rank;
  b.steps_done = done;
  b.in_step = in_step;
  b.step_id = in_step ? step : 0;
  b.in_step_ms = in_step ? ms : 0;
  return b;
}

// Ranks 1..3 on host-b / host-c, all joined at t0.
struct Fixture {
  Clock::time_point t0 = Clock::time_point() + std::chrono::hours(1);
  HeartbeatRegistry reg;
  Fixture() {
    for (int r = 1; r <= 3; ++r) reg.joined({r, 1000 + r, r == 2 ? "host-b" : "host-c"}, t0);
  }
};

TEST(HeartbeatRegistry, AllBeatingAndIdleIsFine) {
  Fixture f;
  EXPECT_EQ(f.reg.describe(f.t0), "");
  for (int k = 1; k <= 20; ++k) {
    const auto now = f.t0 + milliseconds(250 * k);
    for (uint32_t r = 1; r <= 3; ++r) f.reg.beat(beat(r, k), now);
    EXPECT_EQ(f.reg.describe(now + milliseconds(100)), "") << k;
  }
  EXPECT_EQ(f.reg.ranks(), (std::vector<int>{1, 2, 3}));
}

TEST(HeartbeatRegistry, ShortStepsEverywhereAreFine) {
  Fixture f;
  const auto now = f.t0 + milliseconds(500);
  f.reg.beat(beat(1, 10, true, 11, 300), now);
  f.reg.beat(beat(2, 10, true, 11, 200), now);
  f.reg.beat(beat(3, 9, true, 10, 400), now);
  EXPECT_EQ(f.reg.describe(now), "");
}

TEST(HeartbeatRegistry, ARankWhoseBeatsStoppedIsNamed) {
  Fixture f;
  for (int k = 1; k <= 8; ++k) {
    for (uint32_t r = 1; r <= 3; ++r) f.reg.beat(beat(r, k), f.t0 + milliseconds(250 * k));
  }
  // Rank 2 stops at t0 + 2 s; the others go on.
  for (int k = 9; k <= 21; ++k) {
    for (uint32_t r : {1u, 3u}) f.reg.beat(beat(r, 8), f.t0 + milliseconds(250 * k));
  }
  const auto now = f.t0 + milliseconds(5100);
  const auto notes = f.reg.judge(now);
  ASSERT_EQ(notes.size(), 1u) << f.reg.describe(now);
  EXPECT_EQ(notes[0].rank, 2);
  EXPECT_EQ(notes[0].text, "rank 2 on host-b (pid 1002) has sent no heartbeat for 3.1 s: stopped, hung in the kernel or gone");
  // Not yet at 1.4 s of silence (the threshold is 1.5 s).
  EXPECT_EQ(f.reg.describe(f.t0 + milliseconds(2000 + 1400)), "");
}

TEST(HeartbeatRegistry, ARankThatNeverBeatAfterItsHelloIsNamed) {
  Fixture f;
  const auto now = f.t0 + milliseconds(2000);
  f.reg.beat(beat(1, 0), now);
  f.reg.beat(beat(3, 0), now);
  EXPECT_EQ(f.reg.describe(now), "rank 2 on host-b (pid 1002) has sent no heartbeat for 2.0 s: stopped, hung in the kernel or gone");
}

TEST(HeartbeatRegistry, AClosedConnectionIsNamedAtOnce) {
  Fixture f;
  const auto now = f.t0 + milliseconds(300);
  for (uint32_t r = 1; r <= 3; ++r) f.reg.beat(beat(r, 1), now);
  f.reg.closed(3, now);
  f.reg.beat(beat(3, 2), now + milliseconds(100));  // ignored once closed
  EXPECT_EQ(f.reg.describe(now + milliseconds(500)),
            "rank 3 on host-c (pid 1003) closed its heartbeat connection 0.5 s ago: it exited or was killed");
}

TEST(HeartbeatRegistry, ARankInsideAStepPastTheOthersIsNamed) {
  Fixture f;
  const auto now = f.t0 + milliseconds(9000);
  f.reg.beat(beat(1, 118), now);
  f.reg.beat(beat(2, 117, true, 118, 8900), now - milliseconds(100));  // its beat is 0.1 s old
  f.reg.beat(beat(3, 117), now);
  EXPECT_EQ(f.reg.describe(now), "rank 2 on host-b (pid 1002) has been inside step 118 for 9.0 s (117 steps done)");
}

TEST(HeartbeatRegistry, ALongStepIsNotNamedWhenAnotherIsAsLong) {
  Fixture f;
  const auto now = f.t0 + milliseconds(5000);
  f.reg.beat(beat(1, 5, true, 6, 3000), now);
  f.reg.beat(beat(2, 5, true, 6, 3000), now);
  f.reg.beat(beat(3, 5), now);
  EXPECT_EQ(f.reg.describe(now), "");
  f.reg.beat(beat(1, 5, true, 6, 3100), now);
  EXPECT_EQ(f.reg.judge(now).at(0).rank, 1);
}

TEST(HeartbeatRegistry, BeatsOfRanksThatNeverJoinedAreIgnored) {
  HeartbeatRegistry reg;
  const auto t0 = Clock::now();
  reg.beat(beat(7, 1, true, 2, 60000), t0);
  EXPECT_EQ(reg.describe(t0 + std::chrono::seconds(10)), "");
  EXPECT_TRUE(reg.ranks().empty());
}

TEST(HeartbeatRegistry, MergeNotesPrefersProcAndKeepsRankOrder) {
  const std::vector<RankNote> proc = {{1, "rank 1 (pid 42) is stopped (SIGSTOP or a debugger)"}};
  const std::vector<RankNote> beats = {{1, "rank 1 on a (pid 42) has sent no heartbeat for 2.0 s: ..."},
                                       {3, "rank 3 on b (pid 43) has been inside step 9 for 4.0 s"}};
  EXPECT_EQ(merge_notes(proc, beats),
            "rank 1 (pid 42) is stopped (SIGSTOP or a debugger); rank 3 on b (pid 43) has been inside step 9 for 4.0 s");
  EXPECT_EQ(merge_notes({}, {}), "");
  EXPECT_EQ(merge_notes({}, {beats[1]}), beats[1].text);
}

TEST(StepTracker, CountsStepsAndTimesTheOneInside) {
  StepTracker t;
  const auto t0 = Clock::now();
  EXPECT_FALSE(t.read(t0).in_step);
  {
    StepTracker::Scope s(&t, 7);
    const auto st = t.read(Clock::now() + milliseconds(1500));
    EXPECT_TRUE(st.in_step);
    EXPECT_EQ(st.step_id, 7);
    EXPECT_GE(st.in_step_seconds, 1.5);
    EXPECT_EQ(st.steps_done, 0);
  }
  const auto st = t.read();
  EXPECT_FALSE(st.in_step);
  EXPECT_EQ(st.steps_done, 1);
  StepTracker::Scope none(nullptr, 8);  // no tracker: nothing happens
  const Beat b = beat_from(t.read(), 2, 99);
  EXPECT_EQ(b.steps_done, 1u);
  EXPECT_FALSE(b.in_step);
}

// ---- wire format ----

std::vector<FrameReader::Frame> read_all(const std::string& bytes, size_t chunk) {
  FrameReader r;
  std::vector<FrameReader::Frame> out;
  for (size_t i = 0; i < bytes.size(); i += chunk) {
    r.feed(bytes.data() + i, std::min(chunk, bytes.size() - i));
    while (auto f = r.next()) out.push_back(*f);
  }
  return out;
}

TEST(HeartbeatWire, HelloAndBeatsRoundTripInAnyChunks) {
  Beat b = beat(2, 117, true, 118, 9000);
  b.pid = 0x1122334455ull;
  const std::string bytes = encode(Hello{kToken, 2, 0x1122334455ull}) + encode(b) + encode(beat(2, 118));
  EXPECT_EQ(bytes.size(), 3 * kHeaderBytes + kHelloBytes + 2 * kBeatBytes);
  for (size_t chunk : {size_t(1), size_t(3), size_t(7), bytes.size()}) {
    const auto frames = read_all(bytes, chunk);
    ASSERT_EQ(frames.size(), 3u) << chunk;
    ASSERT_TRUE(frames[0].hello.has_value());
    EXPECT_EQ(frames[0].hello->token, kToken);
    EXPECT_EQ(frames[0].hello->rank, 2u);
    EXPECT_EQ(frames[0].hello->pid, 0x1122334455ull);
    ASSERT_TRUE(frames[1].beat.has_value());
    EXPECT_EQ(frames[1].beat->pid, 0x1122334455ull);
    EXPECT_EQ(frames[1].beat->steps_done, 117u);
    EXPECT_TRUE(frames[1].beat->in_step);
    EXPECT_EQ(frames[1].beat->step_id, 118u);
    EXPECT_EQ(frames[1].beat->in_step_ms, 9000u);
    EXPECT_FALSE(frames[2].beat->in_step);
  }
}

void expect_rejected(const std::string& bytes, const std::string& why) {
  FrameReader r;
  EXPECT_THROW(
      {
        r.feed(bytes.data(), bytes.size());
        while (r.next()) {
        }
      },
      WireError)
      << why;
}

TEST(HeartbeatWire, HostileInputIsRejected) {
  const std::string good = encode(beat(1, 5, true, 6, 10));
  std::string s = good;
  s[0] = 'X';
  expect_rejected(s, "bad magic");
  expect_rejected("GET / HTTP/1.1\r\n\r\n", "not a heartbeat at all");
  s = good;
  s[4] = 9;
  expect_rejected(s, "unknown type");
  s = good;
  s[5] = 1;
  expect_rejected(s, "reserved bits");
  s = good;
  s[6] = static_cast<char>(0xff);
  s[7] = static_cast<char>(0xff);
  expect_rejected(s, "a 64 KiB payload (rejected from the header, before any of it is read)");
  s = good;
  s[6] = static_cast<char>(kBeatBytes - 1);
  expect_rejected(s, "short payload");
  s = good;
  s[kHeaderBytes + 20] = 2;
  expect_rejected(s, "in_step neither 0 nor 1");
  expect_rejected(encode(beat(1, 5)).replace(kHeaderBytes + 29, 1, "\x05"), "a step time outside a step");
  EXPECT_THROW(encode(Hello{"short", 1, 1}), WireError);
  // A flood without frame boundaries is refused once more than a frame and a read are held.
  FrameReader r;
  const std::string partial = encode(beat(1, 1)).substr(0, kHeaderBytes + 4);
  r.feed(partial.data(), partial.size());
  EXPECT_FALSE(r.next().has_value());
  const std::string flood(8192, 'x');
  EXPECT_THROW(r.feed(flood.data(), flood.size()), WireError);
}

TEST(HeartbeatWire, AFrameSplitAcrossReadsWaitsForItsRest) {
  const std::string b = encode(beat(1, 2));
  FrameReader r;
  r.feed(b.data(), kHeaderBytes + 3);
  EXPECT_FALSE(r.next().has_value());
  r.feed(b.data() + kHeaderBytes + 3, b.size() - kHeaderBytes - 3);
  auto f = r.next();
  ASSERT_TRUE(f && f->beat);
  EXPECT_EQ(f->beat->steps_done, 2u);
  EXPECT_FALSE(r.next().has_value());
}

// ---- sockets ----

// A raw connection to the server that sends `bytes`; returns whether the server closed it
// within 3 s.
bool server_drops(int port, const std::string& bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return false;
  }
  if (!bytes.empty()) (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  timeval tv{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  const ssize_t n = ::recv(fd, &c, 1, 0);
  ::close(fd);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

template <class Pred>
bool eventually(Pred p, milliseconds within = milliseconds(3000)) {
  const auto until = Clock::now() + within;
  while (Clock::now() < until) {
    if (p()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return p();
}

TEST(HeartbeatSockets, SendersBeatAndAStoppedOneIsNamed) {
  HeartbeatRegistry reg;
  const long me = static_cast<long>(::getpid());
  HeartbeatServer server("127.0.0.1", kToken, {{1, me, "host-a"}, {2, me, "host-b"}}, reg);
  ASSERT_GT(server.port(), 0);
  StepTracker t1, t2;
  auto s1 = std::make_unique<HeartbeatSender>("127.0.0.1", server.port(), kToken, 1, t1, milliseconds(50));
  auto s2 = std::make_unique<HeartbeatSender>("127.0.0.1", server.port(), kToken, 2, t2, milliseconds(50));
  ASSERT_TRUE(eventually([&] { return reg.ranks() == std::vector<int>{1, 2}; }));
  EXPECT_EQ(reg.describe(Clock::now()), "");

  // Rank 2 sits inside step 5 (its tracker says so, beats keep coming): named past 1 s.
  t2.begin(5, Clock::now() - milliseconds(1500));
  EXPECT_TRUE(eventually([&] { return reg.describe(Clock::now()).find("rank 2 on host-b") != std::string::npos; }))
      << reg.describe(Clock::now());
  EXPECT_NE(reg.describe(Clock::now()).find("inside step 5"), std::string::npos) << reg.describe(Clock::now());
  t2.end();
  EXPECT_TRUE(eventually([&] { return reg.describe(Clock::now()).empty(); })) << reg.describe(Clock::now());

  // Rank 1 goes away: its connection closes.
  s1.reset();
  EXPECT_TRUE(eventually([&] { return reg.describe(Clock::now()).find("rank 1 on host-a") != std::string::npos; }));
  EXPECT_NE(reg.describe(Clock::now()).find("closed its heartbeat connection"), std::string::npos);
  EXPECT_EQ(server.refused(), 0);
}

TEST(HeartbeatSockets, StrangersAreDropped) {
  HeartbeatRegistry reg;
  const long me = static_cast<long>(::getpid());
  HeartbeatServer server("127.0.0.1", kToken, {{1, me, "host-a"}}, reg);
  const std::string other(kTokenBytes, 'x');
  EXPECT_TRUE(server_drops(server.port(), encode(Hello{other, 1, static_cast<uint64_t>(me)}))) << "wrong token";
  EXPECT_TRUE(server_drops(server.port(), encode(Hello{kToken, 5, static_cast<uint64_t>(me)}))) << "not a rank of the job";
  EXPECT_TRUE(server_drops(server.port(), encode(Hello{kToken, 1, 1}))) << "another pid";
  EXPECT_TRUE(server_drops(server.port(), encode(beat(1, 1)))) << "a beat before the Hello";
  EXPECT_TRUE(server_drops(server.port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n")) << "garbage";
  EXPECT_TRUE(server_drops(server.port(), "")) << "silence past the Hello deadline";
  EXPECT_TRUE(reg.ranks().empty());
  EXPECT_GE(server.refused(), 6);
  // A sender with the wrong token "connects" (TCP) but never joins.
  StepTracker t;
  {
    HeartbeatSender wrong("127.0.0.1", server.port(), other, 1, t, milliseconds(50));
    std::this_thread::sleep_for(milliseconds(200));
  }
  EXPECT_TRUE(reg.ranks().empty());
  // The real rank 1 joins, and a second connection claiming rank 1 is dropped.
  HeartbeatSender real("127.0.0.1", server.port(), kToken, 1, t, milliseconds(50));
  ASSERT_TRUE(eventually([&] { return reg.ranks() == std::vector<int>{1}; }));
  EXPECT_TRUE(server_drops(server.port(), encode(Hello{kToken, 1, static_cast<uint64_t>(me)}))) << "a duplicate";
  EXPECT_EQ(reg.describe(Clock::now()), "");
}

TEST(HeartbeatSockets, NoListenerIsAClearErrorNotAHang) {
  // A port nobody listens on (bound, not listening).
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  StepTracker t;
  const auto t0 = Clock::now();
  try {
    HeartbeatSender s("127.0.0.1", ntohs(a.sin_port), kToken, 1, t, milliseconds(50), milliseconds(500));
    ADD_FAILURE() << "connected to a port nobody listens on";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot connect to rank 0 at 127.0.0.1:"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
  ::close(fd);
  EXPECT_THROW(HeartbeatServer("not-an-ip", kToken, {}, *std::make_unique<HeartbeatRegistry>()), Error);
}

}  // namespace
}  // namespace pipellm::heartbeat

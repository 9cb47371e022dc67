// Per-rank heartbeats for naming the stuck rank of a hung pipeline on any host.
//
// At startup rank 0 listens on a TCP port (HeartbeatServer) and hands every rank its address
// and a per-launch token (pipellm-stage does that with MPI_Bcast, stage_worker/
// rank_heartbeat_setup.h); every later rank connects (HeartbeatSender) and, from a thread of its
// own, sends every ~250 ms what its StageRunner is doing (StepTracker: steps finished, inside a
// step or not, which, for how long) -- plain sockets, no MPI off the main thread. Rank 0 keeps
// the last beat of each rank (HeartbeatRegistry), and when steps stop coming back it names
//   - a rank whose beats stopped: stopped (SIGSTOP, a debugger), hung in the kernel, or gone;
//   - a rank inside one step for longer than the others (a kernel that never returns, a wait).
// The head already reports its own state to the coordinator (engine/link/progress_watch.h), so
// the beats are about ranks 1..N-1. Where they cannot be set up, nothing fails: the head falls
// back to /proc of the ranks on its own host (stage_worker/rank_processes.h).
//
// Wire format (little-endian), every message one frame:
//   "PHB1" | type u8 | 0 u8 | payload length u16 | payload
//   Hello (type 1, first and once): token (kTokenBytes bytes) | rank u32 | pid u64
//   Beat  (type 2): rank u32 | pid u64 | steps_done u64 | in_step u8 (0/1) | step_id u64 |
//                   in_step_ms u32
// Anything else -- another magic or type, a payload of the wrong length, a Beat before the
// Hello, a rank or pid that does not match the Hello, a bad token -- drops the connection.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "engine/pipeline/step_tracker.h"

namespace pipellm::heartbeat {

using Clock = std::chrono::steady_clock;

constexpr size_t kTokenBytes = 32;  // link::new_link_secret(): 32 hex characters
constexpr size_t kHeaderBytes = 8;
constexpr size_t kHelloBytes = kTokenBytes + 4 + 8;
constexpr size_t kBeatBytes = 4 + 8 + 8 + 1 + 8 + 4;
constexpr std::chrono::milliseconds kInterval{250};

// A malformed frame (the connection that sent it is dropped).
class WireError : public Error {
 public:
  using Error::Error;
};

struct Hello {
  std::string token;  // kTokenBytes bytes
  uint32_t rank = 0;
  uint64_t pid = 0;
};

struct Beat {
  uint32_t rank = 0;
  uint64_t pid = 0;
  uint64_t steps_done = 0;
  bool in_step = false;
  uint64_t step_id = 0;
  uint32_t in_step_ms = 0;
};

std::string encode(const Hello& h);  // throws WireError unless the token has kTokenBytes bytes
std::string encode(const Beat& b);
// The beat a rank sends now, from its tracker.
Beat beat_from(const StepTracker::State& s, uint32_t rank, uint64_t pid);

// Splits a byte stream into frames; throws WireError on the first malformed one (and keeps
// throwing). Holds at most one frame's bytes beyond what it has returned.
class FrameReader {
 public:
  struct Frame {
    uint8_t type = 0;
    std::optional<Hello> hello;
    std::optional<Beat> beat;
  };
  // Appends received bytes (up to a frame and a bit: more means the caller stopped reading).
  void feed(const char* data, size_t n);
  // The next complete frame, or nullopt when more bytes are needed.
  std::optional<Frame> next();

 private:
  std::string buf_;
  size_t pos_ = 0;
};

// Which rank is whom (from the ranks' own report at startup: pid and host).
struct RankIdentity {
  int rank = 0;
  long pid = 0;
  std::string host;
};

// A note about one rank ("rank 2 on host-b (pid 42) ..."), for merging with other sources.
struct RankNote {
  int rank = 0;
  std::string text;
};

struct RegistryPolicy {
  // No beat for this long: the rank's beats stopped (four intervals and some slack).
  std::chrono::milliseconds stale{1500};
  // Inside one step at least this long, and longer than any other rank: named.
  std::chrono::milliseconds long_step{1000};
};

// Rank 0's view of the beats; thread-safe. The clock is the caller's (tests pass their own).
class HeartbeatRegistry {
 public:
  explicit HeartbeatRegistry(RegistryPolicy policy = {}) : policy_(policy) {}

  // A rank said a valid Hello: it is judged from now on.
  void joined(const RankIdentity& who, Clock::time_point now);
  // A beat from a rank that joined (others are ignored).
  void beat(const Beat& b, Clock::time_point now);
  // Its connection closed (the process exited or was killed; or it shut down).
  void closed(int rank, Clock::time_point now);
  // Which ranks joined (rank order).
  std::vector<int> ranks() const;

  // The ranks that look stuck at `now`, in rank order: whose beats stopped, then (if none of
  // those is it) the one inside a step for longer than the others. Empty when all look fine.
  std::vector<RankNote> judge(Clock::time_point now) const;
  // judge() joined with "; ", "" for none.
  std::string describe(Clock::time_point now) const;

 private:
  struct Entry {
    RankIdentity who;
    Clock::time_point heard{};  // last beat (or the Hello)
    std::optional<Beat> last;
    bool closed = false;
    Clock::time_point closed_at{};
  };
  const Entry* find(int rank) const;
  Entry* find(int rank);

  RegistryPolicy policy_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
};

// Notes from /proc (preferred: the kernel's word on a rank on this host) and from the beats,
// one per rank, in rank order, joined with "; "; "" when neither has any.
std::string merge_notes(const std::vector<RankNote>& proc, const std::vector<RankNote>& beats);

// Rank 0: listens on `bind_ip` (numeric IPv4; port chosen by the kernel) and feeds the registry
// from connections whose Hello carries `token` and names one of `expected` ranks by its pid (one
// connection per rank; the first wins). Everything runs on one thread of its own (poll); a
// connection has 2 s for its Hello. Refusals are reported on stderr (a few lines at most).
class HeartbeatServer {
 public:
  // Throws Error when it cannot listen.
  HeartbeatServer(const std::string& bind_ip, const std::string& token, std::vector<RankIdentity> expected,
                  HeartbeatRegistry& registry);
  ~HeartbeatServer();  // stops and joins the thread, closes every socket
  HeartbeatServer(const HeartbeatServer&) = delete;
  HeartbeatServer& operator=(const HeartbeatServer&) = delete;

  int port() const { return port_; }
  // Connections dropped so far (bad Hello, malformed frames, strangers, duplicates).
  int refused() const;

 private:
  void run();

  std::string token_;
  std::vector<RankIdentity> expected_;
  HeartbeatRegistry& registry_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int port_ = 0;
  mutable std::mutex mu_;
  int refused_ = 0;
  std::thread thread_;
};

// Rank k > 0: connects to ip:port within `connect_timeout` and says Hello (throws Error
// naming the address when it cannot), then sends a Beat every `interval` from a thread of its
// own until destroyed. Sends never block: when the socket is full a beat is skipped; when rank 0
// is gone the thread stops quietly (the pipeline's own failure handling speaks).
class HeartbeatSender {
 public:
  HeartbeatSender(const std::string& ip, int port, const std::string& token, int rank, const StepTracker& tracker,
                  std::chrono::milliseconds interval = kInterval,
                  std::chrono::milliseconds connect_timeout = std::chrono::milliseconds(3000));
  ~HeartbeatSender();  // stops and joins the thread, closes the socket
  HeartbeatSender(const HeartbeatSender&) = delete;
  HeartbeatSender& operator=(const HeartbeatSender&) = delete;

 private:
  void run();
  bool send_some();  // false: the connection is gone

  const StepTracker& tracker_;
  const uint32_t rank_;
  const uint64_t pid_;
  const std::chrono::milliseconds interval_;
  int fd_ = -1;
  std::string out_;  // bytes of a frame not yet sent
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace pipellm::heartbeat

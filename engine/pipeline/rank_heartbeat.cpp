#include "engine/pipeline/rank_heartbeat.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

namespace pipellm::heartbeat {

namespace {

constexpr char kMagic[4] = {'P', 'H', 'B', '1'};
constexpr uint8_t kHelloType = 1;
constexpr uint8_t kBeatType = 2;
constexpr size_t kMaxBuffered = 4096;  // bytes a reader holds: a frame's rest plus one read
constexpr size_t kReadChunk = 1024;
constexpr auto kHelloDeadline = std::chrono::milliseconds(2000);
constexpr int kMaxReports = 5;  // refusals reported on stderr, then silence

void put(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string frame(uint8_t type, const std::string& payload) {
  std::string out(kMagic, sizeof kMagic);
  out.push_back(static_cast<char>(type));
  out.push_back(0);
  put(out, payload.size(), 2);
  return out + payload;
}

std::string secs(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

double seconds(Clock::duration d) { return std::max(0.0, std::chrono::duration<double>(d).count()); }

std::string who_text(const RankIdentity& w) {
  std::string s = "rank " + std::to_string(w.rank);
  if (!w.host.empty()) s += " on " + w.host;
  if (w.pid > 0) s += " (pid " + std::to_string(w.pid) + ")";
  return s;
}

bool same_token(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

std::string encode(const Hello& h) {
  if (h.token.size() != kTokenBytes) {
    throw WireError("heartbeat: a token of " + std::to_string(h.token.size()) + " bytes (want " +
                    std::to_string(kTokenBytes) + ")");
  }
  std::string p = h.token;
  put(p, h.rank, 4);
  put(p, h.pid, 8);
  return frame(kHelloType, p);
}

std::string encode(const Beat& b) {
  std::string p;
  put(p, b.rank, 4);
  put(p, b.pid, 8);
  put(p, b.steps_done, 8);
  put(p, b.in_step ? 1 : 0, 1);
  put(p, b.step_id, 8);
  put(p, b.in_step_ms, 4);
  return frame(kBeatType, p);
}

Beat beat_from(const StepTracker::State& s, uint32_t rank, uint64_t pid) {
  Beat b;
  b.rank = rank;
  b.pid = pid;
  b.steps_done = static_cast<uint64_t>(std::max<int64_t>(0, s.steps_done));
  b.in_step = s.in_step;
  b.step_id = s.in_step ? static_cast<uint64_t>(std::max<int64_t>(0, s.step_id)) : 0;
  const double ms = s.in_step ? std::min(4.0e9, std::max(0.0, 1e3 * s.in_step_seconds)) : 0.0;
  b.in_step_ms = static_cast<uint32_t>(ms);
  return b;
}

void FrameReader::feed(const char* data, size_t n) {
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  if (buf_.size() + n > kMaxBuffered) throw WireError("heartbeat: more than " + std::to_string(kMaxBuffered) + " bytes unread");
  buf_.append(data, n);
}

std::optional<FrameReader::Frame> FrameReader::next() {
  const size_t avail = buf_.size() - pos_;
  if (avail < kHeaderBytes) return std::nullopt;
  const char* h = buf_.data() + pos_;
  if (std::memcmp(h, kMagic, sizeof kMagic) != 0) throw WireError("heartbeat: not a heartbeat frame (bad magic)");
  const uint8_t type = static_cast<uint8_t>(h[4]);
  if (h[5] != 0) throw WireError("heartbeat: a frame with reserved bits set");
  const size_t len = static_cast<size_t>(get(h + 6, 2));
  const size_t want = type == kHelloType ? kHelloBytes : type == kBeatType ? kBeatBytes : 0;
  if (want == 0) throw WireError("heartbeat: unknown frame type " + std::to_string(type));
  if (len != want) {
    throw WireError("heartbeat: a frame of type " + std::to_string(type) + " with " + std::to_string(len) +
                    " payload bytes (want " + std::to_string(want) + ")");
  }
  if (avail < kHeaderBytes + len) return std::nullopt;
  const char* p = h + kHeaderBytes;
  Frame f;
  f.type = type;
  if (type == kHelloType) {
    Hello hello;
    hello.token.assign(p, kTokenBytes);
    hello.rank = static_cast<uint32_t>(get(p + kTokenBytes, 4));
    hello.pid = get(p + kTokenBytes + 4, 8);
    f.hello = std::move(hello);
  } else {
    Beat b;
    b.rank = static_cast<uint32_t>(get(p, 4));
    b.pid = get(p + 4, 8);
    b.steps_done = get(p + 12, 8);
    const uint8_t in = static_cast<uint8_t>(p[20]);
    if (in > 1) throw WireError("heartbeat: in_step is " + std::to_string(in) + " (want 0 or 1)");
    b.in_step = in == 1;
    b.step_id = get(p + 21, 8);
    b.in_step_ms = static_cast<uint32_t>(get(p + 29, 4));
    if (!b.in_step && (b.step_id != 0 || b.in_step_ms != 0)) throw WireError("heartbeat: a step outside a step");
    f.beat = b;
  }
  pos_ += kHeaderBytes + len;
  return f;
}

// ---- registry ----

const HeartbeatRegistry::Entry* HeartbeatRegistry::find(int rank) const {
  for (const Entry& e : entries_) {
    if (e.who.rank == rank) return &e;
  }
  return nullptr;
}

HeartbeatRegistry::Entry* HeartbeatRegistry::find(int rank) {
  return const_cast<Entry*>(static_cast<const HeartbeatRegistry*>(this)->find(rank));
}

void HeartbeatRegistry::joined(const RankIdentity& who, Clock::time_point now) {
  std::lock_guard<std::mutex> lk(mu_);
  Entry* e = find(who.rank);
  if (e == nullptr) {
    entries_.push_back({});
    e = &entries_.back();
  }
  *e = Entry{};
  e->who = who;
  e->heard = now;
  std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.who.rank < b.who.rank; });
}

void HeartbeatRegistry::beat(const Beat& b, Clock::time_point now) {
  std::lock_guard<std::mutex> lk(mu_);
  Entry* e = find(static_cast<int>(b.rank));
  if (e == nullptr || e->closed) return;
  e->last = b;
  e->heard = std::max(e->heard, now);
}

void HeartbeatRegistry::closed(int rank, Clock::time_point now) {
  std::lock_guard<std::mutex> lk(mu_);
  Entry* e = find(rank);
  if (e == nullptr || e->closed) return;
  e->closed = true;
  e->closed_at = now;
}

std::vector<int> HeartbeatRegistry::ranks() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<int> out;
  for (const Entry& e : entries_) out.push_back(e.who.rank);
  return out;
}

std::vector<RankNote> HeartbeatRegistry::judge(Clock::time_point now) const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<RankNote> out;
  const double stale = seconds(policy_.stale);
  // The longest step among ranks still beating, and the runner-up.
  const Entry* longest = nullptr;
  double longest_s = -1.0, second_s = -1.0;
  for (const Entry& e : entries_) {
    const double age = seconds(now - e.heard);
    if (e.closed) {
      out.push_back({e.who.rank, who_text(e.who) + " closed its heartbeat connection " + secs(seconds(now - e.closed_at)) +
                                     " ago: it exited or was killed"});
      continue;
    }
    if (age > stale) {
      out.push_back({e.who.rank, who_text(e.who) + " has sent no heartbeat for " + secs(age) +
                                     ": stopped, hung in the kernel or gone"});
      continue;
    }
    const double inside = e.last && e.last->in_step ? 1e-3 * e.last->in_step_ms + age : 0.0;
    if (inside > longest_s) {
      second_s = longest_s;
      longest_s = inside;
      longest = e.last && e.last->in_step ? &e : nullptr;
    } else if (inside > second_s) {
      second_s = inside;
    }
  }
  if (longest != nullptr && longest_s >= seconds(policy_.long_step) && longest_s > second_s) {
    out.push_back({longest->who.rank, who_text(longest->who) + " has been inside step " +
                                          std::to_string(longest->last->step_id) + " for " + secs(longest_s) + " (" +
                                          std::to_string(longest->last->steps_done) + " steps done)"});
  }
  std::stable_sort(out.begin(), out.end(), [](const RankNote& a, const RankNote& b) { return a.rank < b.rank; });
  return out;
}

std::string HeartbeatRegistry::describe(Clock::time_point now) const {
  std::string s;
  for (const RankNote& n : judge(now)) s += (s.empty() ? "" : "; ") + n.text;
  return s;
}

std::string merge_notes(const std::vector<RankNote>& proc, const std::vector<RankNote>& beats) {
  std::map<int, std::string> by_rank;
  for (const RankNote& n : beats) by_rank[n.rank] = n.text;
  for (const RankNote& n : proc) by_rank[n.rank] = n.text;  // the kernel's word wins on its host
  std::string s;
  for (const auto& [rank, text] : by_rank) s += (s.empty() ? "" : "; ") + text;
  return s;
}

// ---- server ----

HeartbeatServer::HeartbeatServer(const std::string& bind_ip, const std::string& token, std::vector<RankIdentity> expected,
                                 HeartbeatRegistry& registry)
    : token_(token), expected_(std::move(expected)), registry_(registry) {
  if (token_.size() != kTokenBytes) throw Error("heartbeat: a token of " + std::to_string(token_.size()) + " bytes");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (::inet_pton(AF_INET, bind_ip.c_str(), &addr.sin_addr) != 1) throw Error("heartbeat: not an IPv4 address: " + bind_ip);
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw Error(errno_text("heartbeat: socket"));
  auto fail = [&](const std::string& what) {
    const std::string text = errno_text(what.c_str());
    ::close(listen_fd_);
    if (wake_[0] >= 0) ::close(wake_[0]);
    if (wake_[1] >= 0) ::close(wake_[1]);
    throw Error(text);
  };
  if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) fail("heartbeat: bind " + bind_ip);
  if (::listen(listen_fd_, 64) != 0) fail("heartbeat: listen");
  socklen_t len = sizeof addr;
  if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) fail("heartbeat: getsockname");
  port_ = ntohs(addr.sin_port);
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) fail("heartbeat: pipe");
  thread_ = std::thread([this] { run(); });
}

HeartbeatServer::~HeartbeatServer() {
  const char c = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_[1], &c, 1);
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

int HeartbeatServer::refused() const {
  std::lock_guard<std::mutex> lk(mu_);
  return refused_;
}

void HeartbeatServer::run() {
  struct Conn {
    int fd = -1;
    std::string peer;
    FrameReader reader;
    int rank = -1;
    uint64_t pid = 0;
    Clock::time_point deadline{};
  };
  std::vector<Conn> conns;
  const size_t cap = 2 * expected_.size() + 8;
  int reports = 0;
  auto drop = [&](Conn& c, const std::string& why, bool refusal) {
    if (c.rank >= 0) registry_.closed(c.rank, Clock::now());
    if (refusal) {
      std::lock_guard<std::mutex> lk(mu_);
      ++refused_;
      if (reports < kMaxReports) {
        ++reports;
        std::fprintf(stderr, "pipellm-stage: heartbeat: dropped a connection from %s: %s\n", c.peer.c_str(), why.c_str());
      }
    }
    ::close(c.fd);
    c.fd = -1;
  };
  // Handles one frame of `c`; throws WireError for anything but a valid Hello, then valid beats.
  auto handle = [&](Conn& c, const FrameReader::Frame& f) {
    const auto now = Clock::now();
    if (f.hello) {
      if (c.rank >= 0) throw WireError("a second Hello");
      if (!same_token(f.hello->token, token_)) throw WireError("a Hello without this launch's token");
      const RankIdentity* who = nullptr;
      for (const RankIdentity& r : expected_) {
        if (r.rank == static_cast<int64_t>(f.hello->rank)) who = &r;
      }
      if (who == nullptr) throw WireError("a Hello from rank " + std::to_string(f.hello->rank) + ", not a rank of this job");
      if (who->pid > 0 && static_cast<uint64_t>(who->pid) != f.hello->pid) {
        throw WireError("a Hello from rank " + std::to_string(who->rank) + " with pid " + std::to_string(f.hello->pid) +
                        " (rank " + std::to_string(who->rank) + " is pid " + std::to_string(who->pid) + ")");
      }
      for (const Conn& o : conns) {
        if (o.fd >= 0 && o.rank == who->rank) throw WireError("a second connection for rank " + std::to_string(who->rank));
      }
      c.rank = who->rank;
      c.pid = f.hello->pid;
      registry_.joined(*who, now);
      return;
    }
    if (c.rank < 0) throw WireError("a beat before the Hello");
    if (static_cast<int64_t>(f.beat->rank) != c.rank || f.beat->pid != c.pid) {
      throw WireError("a beat for rank " + std::to_string(f.beat->rank) + " on rank " + std::to_string(c.rank) + "'s connection");
    }
    registry_.beat(*f.beat, now);
  };

  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const Conn& c : conns) fds.push_back({c.fd, POLLIN, 0});
    const int n = ::poll(fds.data(), fds.size(), 200);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents != 0) break;
    if (fds[1].revents & POLLIN) {
      for (;;) {
        sockaddr_in peer{};
        socklen_t len = sizeof peer;
        const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        Conn c;
        c.fd = fd;
        char ip[INET_ADDRSTRLEN] = "?";
        ::inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
        c.peer = std::string(ip) + ":" + std::to_string(ntohs(peer.sin_port));
        c.deadline = Clock::now() + kHelloDeadline;
        if (conns.size() >= cap) {
          drop(c, "too many connections", true);
          continue;
        }
        conns.push_back(std::move(c));
      }
    }
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      const short ev = i + 2 < fds.size() && fds[i + 2].fd == c.fd ? fds[i + 2].revents : 0;
      if (ev == 0) continue;
      char buf[kReadChunk];
      const ssize_t got = ::recv(c.fd, buf, sizeof buf, 0);
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        drop(c, "closed", c.rank < 0);
        continue;
      }
      if (got < 0) continue;
      try {
        c.reader.feed(buf, static_cast<size_t>(got));
        while (auto f = c.reader.next()) handle(c, *f);
      } catch (const WireError& e) {
        drop(c, e.what(), true);
      }
    }
    const auto now = Clock::now();
    for (Conn& c : conns) {
      if (c.fd >= 0 && c.rank < 0 && now > c.deadline) drop(c, "no Hello within 2 s", true);
    }
    conns.erase(std::remove_if(conns.begin(), conns.end(), [](const Conn& c) { return c.fd < 0; }), conns.end());
  }
  for (Conn& c : conns) ::close(c.fd);
}

// ---- sender ----

HeartbeatSender::HeartbeatSender(const std::string& ip, int port, const std::string& token, int rank,
                                 const StepTracker& tracker, std::chrono::milliseconds interval,
                                 std::chrono::milliseconds connect_timeout)
    : tracker_(tracker), rank_(static_cast<uint32_t>(rank)), pid_(static_cast<uint64_t>(::getpid())), interval_(interval) {
  const std::string where = ip + ":" + std::to_string(port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (port <= 0 || port > 65535 || ::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    throw Error("heartbeat: not an address: " + where);
  }
  out_ = encode(Hello{token, rank_, pid_});  // checks the token before anything is opened
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw Error(errno_text("heartbeat: socket"));
  auto fail = [&](const std::string& why) {
    ::close(fd_);
    fd_ = -1;
    throw Error("heartbeat: cannot connect to rank 0 at " + where + ": " + why);
  };
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) fail(std::strerror(errno));
    pollfd p{fd_, POLLOUT, 0};
    const int n = ::poll(&p, 1, static_cast<int>(connect_timeout.count()));
    if (n == 0) fail("no answer within " + std::to_string(connect_timeout.count()) + " ms");
    if (n < 0) fail(std::strerror(errno));
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) fail(std::strerror(errno));
    if (err != 0) fail(std::strerror(err));
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!send_some()) fail("the Hello could not be sent");
  thread_ = std::thread([this] { run(); });
}

HeartbeatSender::~HeartbeatSender() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

bool HeartbeatSender::send_some() {
  while (!out_.empty()) {
    const ssize_t n = ::send(fd_, out_.data(), out_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      out_.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);  // full: the rest goes later
  }
  return true;
}

void HeartbeatSender::run() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_) {
    if (out_.empty()) out_ = encode(beat_from(tracker_.read(), rank_, pid_));  // else a beat is skipped
    if (!send_some()) return;  // rank 0 is gone
    cv_.wait_for(lk, interval_, [this] { return stopping_; });
  }
}

}  // namespace pipellm::heartbeat

#include "coordinator/http_gate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "base/error.h"
#include "coordinator/http_tls.h"
#include "coordinator/port_probe.h"

namespace pipellm::coord {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kListenBacklog = 1024;

// Reaches cpp-httplib's protected per-request entry point (request line, headers, body, routing,
// response) for a Stream of our own.
struct ProcessRequest : httplib::Server {
  static bool call(httplib::Server& s, httplib::Stream& strm, bool close_connection, bool& connection_closed) {
    auto fn = &ProcessRequest::process_request;
    return (s.*fn)(strm, close_connection, connection_closed, nullptr);
  }
  // cpp-httplib ends streamed (content-provider) responses once its listening socket is invalid;
  // the gate's socket stands in for it while serving.
  static void set_listening(httplib::Server& s, socket_t fd) {
    auto member = &ProcessRequest::svr_sock_;
    (s.*member) = fd;
  }
};

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// Best effort on a non-blocking socket: a short, complete response, then no more writes.
void send_and_close(int fd, const std::string& msg) {
  (void)::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

std::string refusal(int status, const char* reason, const std::string& message, const char* code = nullptr) {
  const std::string body = std::string(R"({"error":{"message":")") + message + R"(","type":")" +
                           (status == 429 ? "rate_limit_error" : "invalid_request_error") + R"(","param":null,"code":)" +
                           (code ? std::string("\"") + code + "\"" : std::string("null")) + "}}";
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
  if (status == 503 || status == 429) r += "Retry-After: 1\r\n";
  r += "Content-Type: application/json\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) +
       "\r\n\r\n" + body;
  return r;
}

struct Conn {
  int fd = -1;
  std::unique_ptr<TlsSession> tls;  // HTTPS: the session over fd
  std::string ip;
  int port = 0;
  std::string buf;   // bytes read (decrypted) and not yet consumed by cpp-httplib
  size_t scanned = 0;  // header terminator searched up to here
  Clock::time_point deadline;  // the handshake and the header block must be done by then
  Clock::time_point queued_at;  // when its complete request began to wait for a worker
  int requests = 0;

  // recv/send through TLS or on the plain socket; -1 with EAGAIN: poll for want_read/want_write.
  ssize_t recv_some(char* p, size_t n) { return tls ? tls->read(p, n) : ::recv(fd, p, n, 0); }
  ssize_t send_some(const char* p, size_t n) { return tls ? tls->write(p, n) : ::send(fd, p, n, MSG_NOSIGNAL); }
  short want_read() const { return tls ? tls->want() : POLLIN; }
  short want_write() const { return tls ? tls->want() : POLLOUT; }
  // Decrypted bytes TLS holds that poll() cannot see.
  size_t pending() const { return tls ? tls->pending() : 0; }

  // No more responses: a short final one (a refusal) best effort without blocking, then the end
  // of the stream (close_notify over TLS). The caller closes the socket.
  void finish(const std::string& final_response = "") {
    const bool can_speak = !tls || tls->handshake_done();
    if (can_speak && !final_response.empty()) {
      if (tls) {
        (void)tls->write(final_response.data(), final_response.size());
      } else {
        (void)::send(fd, final_response.data(), final_response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      }
    }
    if (tls) tls->close_notify();
    ::shutdown(fd, SHUT_WR);
  }
};

// The path of the request line at the start of `buf` ("GET /health?x HTTP/1.1" -> "/health").
std::string request_path(const std::string& buf) {
  const size_t sp = buf.find(' ');
  if (sp == std::string::npos) return "";
  const size_t end = buf.find_first_of(" ?\r\n", sp + 1);
  return buf.substr(sp + 1, (end == std::string::npos ? buf.size() : end) - sp - 1);
}

// Cheap read-only requests that must answer under any load: served by the control workers.
bool is_control_request(const std::string& buf) {
  if (buf.rfind("GET ", 0) != 0) return false;
  const std::string p = request_path(buf);
  return p == "/health" || p == "/metrics" || p == "/v1/models";
}

// Whether `c.buf` holds a complete header block (cpp-httplib stops at the first "\r\n" line).
// Returns 0: not yet, 1: complete, 431: over a limit.
int header_state(Conn& c, const HttpGateLimits& l) {
  const size_t from = c.scanned >= 2 ? c.scanned - 2 : 0;
  const size_t end = c.buf.find("\n\r\n", from);
  const size_t upto = end == std::string::npos ? c.buf.size() : end + 3;
  if (upto > l.max_header_bytes) return 431;
  if (std::count(c.buf.begin(), c.buf.begin() + static_cast<long>(upto), '\n') > l.max_headers + 2) return 431;
  c.scanned = c.buf.size();
  return end == std::string::npos ? 0 : 1;
}

// The numeric host and port of a socket address; left as they are when it has none.
void numeric_address(const sockaddr_storage& a, socklen_t len, std::string& ip, int& port) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host;
    port = std::atoi(serv);
  }
}

// How the request at the start of `buf` (a complete header block) frames its body.
struct BodyFraming {
  size_t header_bytes = 0;
  uint64_t content_length = 0;
  bool chunked = false;
};

BodyFraming body_framing(const std::string& buf) {
  BodyFraming f;
  const size_t end = buf.find("\n\r\n");
  f.header_bytes = end == std::string::npos ? buf.size() : end + 3;
  size_t pos = buf.find('\n');
  while (pos != std::string::npos && pos + 1 < f.header_bytes) {
    const size_t next = buf.find('\n', pos + 1);
    std::string line = buf.substr(pos + 1, (next == std::string::npos ? f.header_bytes : next) - pos - 1);
    std::transform(line.begin(), line.end(), line.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (line.rfind("content-length:", 0) == 0) {
      f.content_length = std::strtoull(line.c_str() + 15, nullptr, 10);
    } else if (line.rfind("transfer-encoding:", 0) == 0 && line.find("chunked") != std::string::npos) {
      f.chunked = true;
    }
    pos = next;
  }
  return f;
}

// The socket as cpp-httplib sees it: the buffered header block first, then the body from the
// socket within the read deadline.
class ConnStream : public httplib::Stream {
 public:
  ConnStream(Conn& c, const HttpGateLimits& l)
      : c_(c), l_(l), body_deadline_(Clock::now() + std::chrono::milliseconds(l.read_timeout_ms)) {}

  size_t consumed() const { return pos_; }                 // of the buffered bytes
  uint64_t total_read() const { return pos_ + from_socket_; }  // buffered and from the socket

  bool is_readable() const override {
    return pos_ < c_.buf.size() || c_.pending() > 0 || wait(c_.want_read(), ms_left(body_deadline_));
  }
  bool is_writable() const override { return wait(POLLOUT, l_.write_timeout_ms); }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ < c_.buf.size()) {
      const size_t n = std::min(size, c_.buf.size() - pos_);
      std::memcpy(ptr, c_.buf.data() + pos_, n);
      pos_ += n;
      return static_cast<ssize_t>(n);
    }
    for (;;) {
      if (c_.pending() == 0 && !wait(c_.want_read(), ms_left(body_deadline_))) return -1;
      const ssize_t n = c_.recv_some(ptr, size);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      if (n > 0) from_socket_ += static_cast<uint64_t>(n);
      return n;
    }
  }

  ssize_t write(const char* ptr, size_t size) override {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = c_.send_some(ptr + done, size - done);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (!wait(c_.want_write(), l_.write_timeout_ms)) return -1;
        continue;
      }
      return -1;
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.ip;
    port = c_.port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    ip.clear();
    port = 0;
    if (::getsockname(c_.fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) numeric_address(a, len, ip, port);
  }
  socket_t socket() const override { return c_.fd; }

 private:
  bool wait(short events, int timeout_ms) const {
    pollfd p{c_.fd, events, 0};
    for (;;) {
      const int r = ::poll(&p, 1, timeout_ms);
      if (r < 0 && errno == EINTR) continue;
      return r > 0 && (p.revents & (events | POLLHUP | POLLERR));
    }
  }

  Conn& c_;
  const HttpGateLimits& l_;
  size_t pos_ = 0;
  uint64_t from_socket_ = 0;
  Clock::time_point body_deadline_;
};

}  // namespace

struct HttpGate::Impl {
  httplib::Server& server;
  HttpGateLimits lim;
  const TlsContext* tls;  // null: plain HTTP
  int listen_fd = -1;
  int wake_fd = -1;
  int port = 0;
  std::atomic<bool> stopping{false};
  std::thread loop;
  std::vector<std::thread> workers;  // generation workers, then the control workers

  std::mutex mu;
  std::condition_variable cv;          // generation workers
  std::condition_variable control_cv;  // control workers
  std::deque<std::unique_ptr<Conn>> ready;     // complete header block, waiting for a worker
  std::deque<std::unique_ptr<Conn>> control;   // the same for /health, /metrics, /v1/models
  std::deque<std::unique_ptr<Conn>> returned;  // keep-alive, back to the event loop
  std::map<std::string, int> per_client;       // open connections per address (guarded by mu)
  int open = 0;                                // guarded by mu
  int busy = 0;                                // generation workers in a request (guarded by mu)
  uint64_t busy_refusals = 0;                  // 429s for want of a worker (guarded by mu)

  Impl(httplib::Server& s, HttpGateLimits l, const TlsContext* t, std::function<void(int, const std::string&)> r)
      : server(s), lim(l), tls(t), on_refused(std::move(r)) {}

  std::function<void(int, const std::string&)> on_refused;

  void refused(int status, const std::string& path = "") {
    if (on_refused) on_refused(status, path);
  }

  // No worker for this request in time (or too many waiting): 429 with Retry-After, closed.
  void too_busy(Conn& c, const char* why) {
    spdlog::warn("http: request from {} refused: {} ({} workers busy)", c.ip, why, lim.workers);
    const std::string path = request_path(c.buf);
    c.finish(refusal(429, "Too Many Requests", std::string("the server is busy: ") + why + "; retry later",
                     "server_busy"));
    closed(c);
    {
      std::lock_guard<std::mutex> g(mu);
      ++busy_refusals;
    }
    refused(429, path);
  }

  // Requests that waited for a worker past the queue deadline (the oldest are at the front).
  void expire_waiting() {
    std::vector<std::unique_ptr<Conn>> late;
    const auto limit = Clock::now() - std::chrono::milliseconds(lim.queue_timeout_ms);
    {
      std::lock_guard<std::mutex> g(mu);
      while (!ready.empty() && ready.front()->queued_at <= limit) {
        late.push_back(std::move(ready.front()));
        ready.pop_front();
      }
    }
    for (auto& c : late) too_busy(*c, "no worker became free in time");
  }

  void wake() {
    uint64_t one = 1;
    (void)!::write(wake_fd, &one, sizeof one);
  }

  void closed(Conn& c) {
    ::close(c.fd);
    std::lock_guard<std::mutex> g(mu);
    --open;
    if (--per_client[c.ip] <= 0) per_client.erase(c.ip);
  }

  void accept_all(std::vector<std::unique_ptr<Conn>>& waiting) {
    for (;;) {
      sockaddr_storage a{};
      socklen_t len = sizeof a;
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&a), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      numeric_address(a, len, c->ip, c->port);
      bool admit;
      {
        std::lock_guard<std::mutex> g(mu);
        admit = open < lim.max_connections && per_client[c->ip] < lim.max_connections_per_client;
        if (admit) {
          ++open;
          ++per_client[c->ip];
        } else if (per_client[c->ip] == 0) {
          per_client.erase(c->ip);
        }
      }
      if (!admit) {
        spdlog::warn("http: connection from {} refused (too many connections)", c->ip);
        // Over TLS there is no session to answer in (a handshake costs what the cap saves).
        send_and_close(fd, tls ? std::string() : refusal(503, "Service Unavailable", "too many connections"));
        refused(503);
        continue;
      }
      if (tls) {
        try {
          c->tls = std::make_unique<TlsSession>(*tls, fd);
        } catch (const Error& e) {
          spdlog::warn("{}", e.what());
          closed(*c);
          continue;
        }
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      c->deadline = Clock::now() + std::chrono::milliseconds(lim.header_timeout_ms);
      waiting.push_back(std::move(c));
    }
  }

  // Checks a connection's header block; true when it left `waiting` (to a worker or closed).
  bool check(std::unique_ptr<Conn>& c) {
    const int st = header_state(*c, lim);
    if (st == 0) return false;
    if (st == 431) {
      spdlog::warn("http: request from {} refused: header block over {} bytes or {} lines", c->ip,
                   lim.max_header_bytes, lim.max_headers);
      c->finish(refusal(431, "Request Header Fields Too Large", "request header fields too large"));
      closed(*c);
      refused(431);
      return true;
    }
    c->queued_at = Clock::now();
    const bool ctl = is_control_request(c->buf);
    {
      std::unique_lock<std::mutex> g(mu);
      auto& q = ctl ? control : ready;
      if (static_cast<int>(q.size()) >= lim.max_waiting) {
        g.unlock();
        too_busy(*c, "too many requests waiting for a worker");
        return true;
      }
      q.push_back(std::move(c));
    }
    (ctl ? control_cv : cv).notify_one();
    return true;
  }

  // The TLS handshake, then header bytes, as far as the socket allows without blocking; true when
  // the connection left the event loop (to a worker, or closed).
  bool advance(std::unique_ptr<Conn>& c, char* chunk, size_t chunk_size) {
    if (c->tls && !c->tls->handshake_done() && c->tls->handshake() < 0) {
      if (errno == EAGAIN) return false;
      spdlog::debug("http: TLS handshake with {} failed", c->ip);
      closed(*c);  // nothing to answer in
      return true;
    }
    for (;;) {
      const size_t room = lim.max_header_bytes + 4 - std::min(c->buf.size(), lim.max_header_bytes + 3);
      const ssize_t n = c->recv_some(chunk, std::min(room, chunk_size));
      if (n > 0) {
        c->buf.append(chunk, static_cast<size_t>(n));
        if (check(c)) return true;
        if (c->pending() == 0) return false;  // the socket's next bytes come with the next poll
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
      closed(*c);
      return true;
    }
  }

  void run_loop() {
    std::vector<std::unique_ptr<Conn>> waiting;
    std::vector<pollfd> fds;
    char chunk[16384];
    while (!stopping.load()) {
      {
        std::lock_guard<std::mutex> g(mu);
        while (!returned.empty()) {
          waiting.push_back(std::move(returned.front()));
          returned.pop_front();
        }
      }
      // Returned keep-alive connections may already hold their next request.
      for (size_t i = 0; i < waiting.size();) {
        if (waiting[i]->scanned == 0 && !waiting[i]->buf.empty() && check(waiting[i])) {
          waiting.erase(waiting.begin() + static_cast<long>(i));
        } else {
          ++i;
        }
      }
      fds.assign(2, pollfd{});
      fds[0] = {listen_fd, POLLIN, 0};
      fds[1] = {wake_fd, POLLIN, 0};
      expire_waiting();
      int timeout = 1000;
      {
        std::lock_guard<std::mutex> g(mu);
        if (!ready.empty()) timeout = 50;  // watch the queue deadline
      }
      for (auto& c : waiting) {
        fds.push_back({c->fd, c->want_read(), 0});
        timeout = std::min(timeout, c->pending() > 0 ? 0 : ms_left(c->deadline) + 1);
      }
      const int r = ::poll(fds.data(), fds.size(), timeout);
      if (r < 0 && errno != EINTR) {
        spdlog::error("http: poll failed: {}", std::strerror(errno));
        break;
      }
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        (void)!::read(wake_fd, &v, sizeof v);
      }
      const auto now = Clock::now();
      std::vector<std::unique_ptr<Conn>> kept;
      kept.reserve(waiting.size());
      for (size_t i = 0; i < waiting.size(); ++i) {
        auto& c = waiting[i];
        const short ev = fds[i + 2].revents;
        bool gone = false;
        if ((ev & (POLLIN | POLLOUT | POLLHUP | POLLERR)) || c->pending() > 0) gone = advance(c, chunk, sizeof chunk);
        if (!gone && c->deadline <= now) {
          if (!c->buf.empty()) {
            spdlog::warn("http: request from {} timed out reading headers", c->ip);
            c->finish(refusal(408, "Request Timeout", "request header timeout"));
            refused(408);
          }
          closed(*c);
          gone = true;
        }
        if (!gone) kept.push_back(std::move(c));
      }
      waiting.swap(kept);
      if (fds[0].revents & POLLIN) accept_all(waiting);
    }
    for (auto& c : waiting) closed(*c);
  }

  void run_worker(bool ctl) {
    auto& q = ctl ? control : ready;
    auto& wait_cv = ctl ? control_cv : cv;
    for (;;) {
      std::unique_ptr<Conn> c;
      {
        std::unique_lock<std::mutex> g(mu);
        wait_cv.wait(g, [&] { return stopping.load() || !q.empty(); });
        if (q.empty()) return;
        c = std::move(q.front());
        q.pop_front();
        if (!ctl) ++busy;
      }
      serve(std::move(c));
      if (!ctl) {
        std::lock_guard<std::mutex> g(mu);
        --busy;
      }
    }
  }

  // One request on a worker; a kept-alive connection goes back to the event loop.
  void serve(std::unique_ptr<Conn> c) {
    c->requests++;
    const bool last = stopping.load() || c->requests >= lim.keep_alive_max_requests;
    bool connection_closed = false;
    bool ok = false;
    size_t used = 0;
    // A request refused before its body was read (401, 403, 415) leaves the body unread: on a
    // kept-alive connection it would be read as the next request, so such a connection closes.
    const BodyFraming framing = body_framing(c->buf);
    bool body_unread = false;
    {
      ConnStream strm(*c, lim);
      ok = ProcessRequest::call(server, strm, last, connection_closed);
      used = strm.consumed();
      body_unread = framing.chunked ? strm.total_read() <= framing.header_bytes
                                    : strm.total_read() < framing.header_bytes + framing.content_length;
    }
    if (!ok || connection_closed || last || stopping.load() || body_unread) {
      c->finish();
      closed(*c);
      return;
    }
    c->buf.erase(0, std::min(used, c->buf.size()));
    c->scanned = 0;
    c->deadline = Clock::now() + std::chrono::milliseconds(lim.header_timeout_ms);
    {
      std::lock_guard<std::mutex> g(mu);
      returned.push_back(std::move(c));
    }
    wake();
  }
};

HttpGate::HttpGate(httplib::Server& server, const std::string& host, int port, HttpGateLimits limits,
                   const TlsContext* tls, std::function<void(int, const std::string&)> on_refused)
    : impl_(std::make_unique<Impl>(server, limits, tls, std::move(on_refused))) {
  Impl& m = *impl_;
  std::string why;
  m.listen_fd = listen_on(host, port, kListenBacklog, SOCK_NONBLOCK, why);
  if (m.listen_fd < 0) throw Error("http: cannot listen on " + host + ":" + std::to_string(port) + ": " + why);
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  ::getsockname(m.listen_fd, reinterpret_cast<sockaddr*>(&a), &len);
  m.port = a.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port)
                                   : ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  m.wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ProcessRequest::set_listening(m.server, m.listen_fd);
  for (int i = 0; i < std::max(1, m.lim.workers); ++i) m.workers.emplace_back([&m] { m.run_worker(false); });
  for (int i = 0; i < std::max(1, m.lim.control_workers); ++i) m.workers.emplace_back([&m] { m.run_worker(true); });
  m.loop = std::thread([&m] { m.run_loop(); });
}

HttpGate::~HttpGate() { stop(); }

int HttpGate::port() const { return impl_->port; }

HttpGateStats HttpGate::stats() const {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> g(m.mu);
  return {m.lim.workers, m.busy, static_cast<int>(m.ready.size()), m.open, m.busy_refusals};
}

void HttpGate::stop() {
  Impl& m = *impl_;
  if (m.stopping.exchange(true)) return;
  m.wake();
  if (m.loop.joinable()) m.loop.join();
  ProcessRequest::set_listening(m.server, INVALID_SOCKET);
  m.cv.notify_all();
  m.control_cv.notify_all();
  for (auto& t : m.workers) t.join();
  // Connections still waiting for a worker when it stopped.
  for (auto* q : {&m.ready, &m.control, &m.returned}) {
    for (auto& c : *q) m.closed(*c);
    q->clear();
  }
  ::close(m.listen_fd);
  ::close(m.wake_fd);
}

}  // namespace pipellm::coord

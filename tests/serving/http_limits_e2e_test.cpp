// The HTTP front door of a real pipellm-coordinator against abusive clients (issue 21 items 2
// and 3), over plain HTTP and over HTTPS: a huge header block is refused with 431 before it is
// read whole and leaves the coordinator's memory as it was; slow-header connections (slowloris)
// neither block other clients nor stay open past the header timeout; connections per client
// address are capped (503; over TLS closed before the handshake).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kModel = "tiny-llama-Q8_0";
constexpr int kHeaderTimeoutMs = 3000;
constexpr int kPerClient = 100;

long rss_kb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// A client connection, plain or TLS (the handshake done on connect; certificates not checked:
// the tests' own are self-signed). The limits must hold the same on both.
class Conn {
 public:
  Conn(int port, SSL_CTX* tls) : fd_(connect_to(port)) {
    if (fd_ < 0 || !tls) return;
    ssl_ = SSL_new(tls);
    SSL_set_fd(ssl_, fd_);
    if (SSL_connect(ssl_) != 1) {
      ERR_clear_error();
      SSL_free(ssl_);
      ssl_ = nullptr;
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~Conn() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool ok() const { return fd_ >= 0; }
  // All of `data` (blocking, 5 s per write).
  bool send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ssl_ ? SSL_write(ssl_, data.data() + done, static_cast<int>(data.size() - done))
                             : ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // What the server answered (up to the first read's worth), "" if it closed or reset.
  std::string read_reply() {
    char buf[4096];
    const ssize_t n = ssl_ ? SSL_read(ssl_, buf, sizeof buf) : ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }
  // True when the server closed the connection (EOF, close_notify or reset) within `ms`.
  bool closed_by_server(int ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd_, POLLIN, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
      char buf[512];  // a 408 may come first
      if (ssl_) {
        const int n = SSL_read(ssl_, buf, sizeof buf);
        if (n <= 0 && SSL_get_error(ssl_, n) != SSL_ERROR_WANT_READ) return true;
      } else {
        const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
      }
    }
  }

 private:
  int fd_;
  SSL* ssl_ = nullptr;
};

// A self-signed certificate for 127.0.0.1 in `dir` (openssl's command line).
void make_certificate(const std::string& dir) {
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                          "-addext subjectAltName=IP:127.0.0.1 -keyout " + dir + "/key.pem -out " + dir +
                          "/cert.pem 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl could not make a test certificate");
}

// Run once over plain HTTP (false) and once over HTTPS (true).
class HttpLimits : public ::testing::TestWithParam<bool> {
 protected:
  static void SetUpTestSuite() {
    std::signal(SIGPIPE, SIG_IGN);  // SSL_write to a connection the server closed
    client_tls_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(client_tls_, SSL_VERIFY_NONE, nullptr);
    cert_dir_ = new std::string(std::filesystem::temp_directory_path() / "pipellm-limits-XXXXXX");
    if (::mkdtemp(cert_dir_->data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    make_certificate(*cert_dir_);
    for (const bool tls : {false, true}) {
      std::vector<std::string> args = {"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "256",
                                       "--slots", "2", "--threads", "1", "--http-threads", "8",
                                       "--http-header-timeout-ms", std::to_string(kHeaderTimeoutMs),
                                       "--max-connections-per-client", std::to_string(kPerClient)};
      if (tls) {
        for (const char* a : {"--tls-cert", "cert.pem", "--tls-key", "key.pem"}) {
          args.push_back(a[0] == '-' ? a : *cert_dir_ + "/" + a);
        }
      }
      srv_[tls] = new ServingProcess(args);
    }
  }
  static void TearDownTestSuite() {
    for (auto*& s : srv_) {
      delete s;
      s = nullptr;
    }
    std::filesystem::remove_all(*cert_dir_);
    delete cert_dir_;
    SSL_CTX_free(client_tls_);
  }
  ServingProcess& srv() const { return *srv_[GetParam()]; }
  std::unique_ptr<Conn> connect() const {
    return std::make_unique<Conn>(srv().http_port(), GetParam() ? client_tls_ : nullptr);
  }
  bool models_ok() const {
    auto c = srv().http();
    c->set_connection_timeout(3);
    c->set_read_timeout(3);
    auto r = c->Get("/v1/models");
    return r && r->status == 200;
  }
  static ServingProcess* srv_[2];
  static SSL_CTX* client_tls_;
  static std::string* cert_dir_;
};
ServingProcess* HttpLimits::srv_[2] = {nullptr, nullptr};
SSL_CTX* HttpLimits::client_tls_ = nullptr;
std::string* HttpLimits::cert_dir_ = nullptr;

TEST_P(HttpLimits, HugeHeaderBlocksAreRefusedWithBoundedMemory) {
  const long before = rss_kb(srv().pid());
  ASSERT_GT(before, 0);
  // Eight clients at once, each sending 100k headers (20 MB).
  std::vector<std::thread> clients;
  std::vector<std::string> replies(8);
  const auto t0 = Clock::now();
  for (size_t i = 0; i < replies.size(); ++i) {
    clients.emplace_back([&, i] {
      auto c = connect();
      ASSERT_TRUE(c->ok());
      std::string line = "X-Filler: " + std::string(188, 'a') + "\r\n";
      std::string chunk;
      for (int k = 0; k < 1000; ++k) chunk += line;  // 200 kB
      bool sent = c->send("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n");
      for (int k = 0; sent && k < 100; ++k) sent = c->send(chunk);
      if (sent) (void)c->send("\r\n");
      replies[i] = c->read_reply();
    });
  }
  for (auto& t : clients) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  for (const auto& r : replies) {
    // Refused: a 431, or (when the reset beat the reply) the connection closed; never served.
    if (!r.empty()) {
      EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << r.substr(0, 200);
    }
  }
  EXPECT_LT(secs, 10.0);
  const long after = rss_kb(srv().pid());
  EXPECT_LT(after - before, 32 * 1024) << "RSS " << before << " kB -> " << after << " kB";
  // 1000 header lines of a few bytes each: over the line limit.
  {
    auto c = connect();
    std::string block = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (int k = 0; k < 1000; ++k) block += "A: b\r\n";
    block += "\r\n";
    ASSERT_TRUE(c->send(block));
    const std::string r = c->read_reply();
    EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << r.substr(0, 200);
  }
  EXPECT_TRUE(models_ok());
}

TEST_P(HttpLimits, SlowHeaderClientsDoNotBlockOthersAndAreClosed) {
  // 80 connections, each trickling one header byte every 500 ms (more than the 8 workers).
  std::vector<std::unique_ptr<Conn>> slow;
  for (int i = 0; i < 80; ++i) {
    slow.push_back(connect());
    ASSERT_TRUE(slow.back()->ok());
  }
  const std::string req = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
  std::atomic<bool> done{false};
  std::thread trickler([&] {
    for (size_t k = 0; k < req.size() && !done.load(); ++k) {
      for (auto& c : slow) (void)c->send(req.substr(k, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const auto t0 = Clock::now();
  EXPECT_TRUE(models_ok());
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 3.0);
  // Past the header timeout every slow connection has been closed by the server.
  std::this_thread::sleep_for(std::chrono::milliseconds(kHeaderTimeoutMs));
  done = true;
  trickler.join();
  int open = 0;
  for (auto& c : slow) open += c->closed_by_server(1500) ? 0 : 1;
  EXPECT_EQ(open, 0) << srv().log();
  EXPECT_TRUE(models_ok());
}

// A connection that never sends a byte (over TLS: never starts the handshake) is closed at the
// header deadline too.
TEST_P(HttpLimits, SilentConnectionsAreClosedAtTheHeaderDeadline) {
  const int fd = connect_to(srv().http_port());
  ASSERT_GE(fd, 0);
  const auto t0 = Clock::now();
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, kHeaderTimeoutMs + 2000), 1);
  char b;
  EXPECT_LE(::recv(fd, &b, 1, MSG_DONTWAIT), 0);  // EOF: nothing was said
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_GT(secs, kHeaderTimeoutMs / 1000.0 - 0.5);
  ::close(fd);
}

TEST_P(HttpLimits, ConnectionsPerClientAreCapped) {
  std::vector<std::unique_ptr<Conn>> idle;
  for (int i = 0; i < kPerClient; ++i) {
    idle.push_back(connect());
    ASSERT_TRUE(idle.back()->ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto t0 = Clock::now();
  if (GetParam()) {
    // HTTPS: closed at once, before a handshake it would cost to answer.
    EXPECT_FALSE(connect()->ok());
  } else {
    const int extra = connect_to(srv().http_port());
    ASSERT_GE(extra, 0);
    char buf[512];
    const ssize_t n = ::recv(extra, buf, sizeof buf, 0);
    const std::string r = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    EXPECT_EQ(r.rfind("HTTP/1.1 503", 0), 0u) << r.substr(0, 200);
    ::close(extra);
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
  idle.clear();
  // The closed connections are released: the client is served again.
  bool ok = false;
  for (int i = 0; i < 20 && !ok; ++i) {
    ok = models_ok();
    if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(ok);
}

INSTANTIATE_TEST_SUITE_P(PlainAndTls, HttpLimits, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "https" : "http"; });

}  // namespace
}  // namespace pipellm::test

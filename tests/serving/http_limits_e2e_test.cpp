// The HTTP front door of a real pipellm-coordinator against abusive clients (issue 21 items 2
// and 3): a huge header block is refused with 431 before it is read whole and leaves the
// coordinator's memory as it was; slow-header connections (slowloris) neither block other clients
// nor stay open past the header timeout; connections per client address are capped (503).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
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

// What the server answered (up to the first read's worth), "" if it closed or reset.
std::string read_reply(int fd) {
  char buf[4096];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// True when the server closed the connection (EOF or reset) within `ms`.
bool closed_by_server(int fd, int ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[512];  // a 408 may come first
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
  }
}

class HttpLimits : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    srv_ = new ServingProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "256", "--slots", "2",
                               "--threads", "1", "--http-threads", "8", "--http-header-timeout-ms",
                               std::to_string(kHeaderTimeoutMs), "--max-connections-per-client",
                               std::to_string(kPerClient)});
  }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
  }
  static bool models_ok() {
    auto c = srv_->http();
    c->set_connection_timeout(3);
    c->set_read_timeout(3);
    auto r = c->Get("/v1/models");
    return r && r->status == 200;
  }
  static ServingProcess* srv_;
};
ServingProcess* HttpLimits::srv_ = nullptr;

TEST_F(HttpLimits, HugeHeaderBlocksAreRefusedWithBoundedMemory) {
  const long before = rss_kb(srv_->pid());
  ASSERT_GT(before, 0);
  // Eight clients at once, each sending 100k headers (20 MB).
  std::vector<std::thread> clients;
  std::vector<std::string> replies(8);
  const auto t0 = Clock::now();
  for (size_t i = 0; i < replies.size(); ++i) {
    clients.emplace_back([&, i] {
      const int fd = connect_to(srv_->http_port());
      ASSERT_GE(fd, 0);
      std::string block = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n";
      std::string line = "X-Filler: " + std::string(188, 'a') + "\r\n";
      std::string chunk;
      for (int k = 0; k < 1000; ++k) chunk += line;  // 200 kB
      bool sent = ::send(fd, block.data(), block.size(), MSG_NOSIGNAL) > 0;
      for (int k = 0; sent && k < 100; ++k) {
        sent = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(chunk.size());
      }
      if (sent) (void)::send(fd, "\r\n", 2, MSG_NOSIGNAL);
      replies[i] = read_reply(fd);
      ::close(fd);
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
  const long after = rss_kb(srv_->pid());
  EXPECT_LT(after - before, 32 * 1024) << "RSS " << before << " kB -> " << after << " kB";
  // 100k header lines of a few bytes each: over the line limit.
  {
    const int fd = connect_to(srv_->http_port());
    std::string block = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (int k = 0; k < 1000; ++k) block += "A: b\r\n";
    block += "\r\n";
    ASSERT_EQ(::send(fd, block.data(), block.size(), MSG_NOSIGNAL), static_cast<ssize_t>(block.size()));
    const std::string r = read_reply(fd);
    EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << r.substr(0, 200);
    ::close(fd);
  }
  EXPECT_TRUE(models_ok());
}

TEST_F(HttpLimits, SlowHeaderClientsDoNotBlockOthersAndAreClosed) {
  // 80 connections, each trickling one header byte every 500 ms (more than the 8 workers).
  std::vector<int> slow;
  for (int i = 0; i < 80; ++i) {
    const int fd = connect_to(srv_->http_port());
    ASSERT_GE(fd, 0);
    slow.push_back(fd);
  }
  const std::string req = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
  std::atomic<bool> done{false};
  std::thread trickler([&] {
    for (size_t k = 0; k < req.size() && !done.load(); ++k) {
      for (int fd : slow) (void)::send(fd, &req[k], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const auto t0 = Clock::now();
  EXPECT_TRUE(models_ok());
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 3.0);
  // Past the header timeout every slow connection has been closed by the server.
  std::this_thread::sleep_for(std::chrono::milliseconds(kHeaderTimeoutMs));
  int open = 0;
  for (int fd : slow) open += closed_by_server(fd, 1500) ? 0 : 1;
  done = true;
  trickler.join();
  for (int fd : slow) ::close(fd);
  EXPECT_EQ(open, 0) << srv_->log();
  EXPECT_TRUE(models_ok());
}

TEST_F(HttpLimits, ConnectionsPerClientAreCapped) {
  std::vector<int> idle;
  for (int i = 0; i < kPerClient; ++i) {
    const int fd = connect_to(srv_->http_port());
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto t0 = Clock::now();
  const int extra = connect_to(srv_->http_port());
  ASSERT_GE(extra, 0);
  const std::string r = read_reply(extra);
  EXPECT_EQ(r.rfind("HTTP/1.1 503", 0), 0u) << r.substr(0, 200);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
  ::close(extra);
  for (int fd : idle) ::close(fd);
  // The closed connections are released: the client is served again.
  bool ok = false;
  for (int i = 0; i < 20 && !ok; ++i) {
    ok = models_ok();
    if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(ok);
}

}  // namespace
}  // namespace pipellm::test

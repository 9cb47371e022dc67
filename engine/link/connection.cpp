#include "engine/link/connection.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

namespace pipellm::link {

FrameConnection::FrameConnection(Fd fd) : fd_(std::move(fd)) {}

void FrameConnection::send_frame(const std::vector<uint8_t>& frame) {
  std::lock_guard<std::mutex> lock(send_mu_);
  size_t off = 0;
  while (off < frame.size()) {
    const ssize_t n = ::send(fd_.get(), frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET || errno == EBADF) {
        throw LinkClosed(std::string("link: peer closed the connection (") + std::strerror(errno) + ")");
      }
      throw LinkError(std::string("link: send: ") + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
}

std::optional<std::vector<uint8_t>> FrameConnection::take_frame() {
  if (rbuf_.size() < kFrameHeaderBytes) return std::nullopt;
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len |= static_cast<uint32_t>(rbuf_[static_cast<size_t>(i)]) << (8 * i);
  if (len == 0) throw LinkError("link: frame of length 0 (no message type)");
  if (len > kMaxFrameBytes) {
    throw LinkError("link: frame length " + std::to_string(len) + " exceeds the limit of " +
                    std::to_string(kMaxFrameBytes) + " bytes");
  }
  if (rbuf_.size() < kFrameHeaderBytes + len) return std::nullopt;
  std::vector<uint8_t> body(rbuf_.begin() + kFrameHeaderBytes, rbuf_.begin() + static_cast<long>(kFrameHeaderBytes + len));
  rbuf_.erase(rbuf_.begin(), rbuf_.begin() + static_cast<long>(kFrameHeaderBytes + len));
  return body;
}

std::optional<std::vector<uint8_t>> FrameConnection::recv_frame(int timeout_ms) {
  std::lock_guard<std::mutex> lock(recv_mu_);
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
  for (;;) {
    if (auto f = take_frame()) return f;
    int wait = -1;
    if (timeout_ms >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
      wait = left > 0 ? static_cast<int>(left) : 0;
    }
    pollfd p{fd_.get(), POLLIN, 0};
    const int rc = ::poll(&p, 1, wait);
    if (rc < 0) {
      if (errno == EINTR) continue;
      throw LinkError(std::string("link: poll: ") + std::strerror(errno));
    }
    if (rc == 0) return std::nullopt;
    uint8_t buf[65536];
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) throw LinkClosed("link: peer closed the connection");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      if (errno == ECONNRESET || errno == EBADF || errno == ENOTCONN) {
        throw LinkClosed(std::string("link: connection lost (") + std::strerror(errno) + ")");
      }
      throw LinkError(std::string("link: recv: ") + std::strerror(errno));
    }
    rbuf_.insert(rbuf_.end(), buf, buf + n);
  }
}

void FrameConnection::shutdown() { ::shutdown(fd_.get(), SHUT_RDWR); }

}  // namespace pipellm::link

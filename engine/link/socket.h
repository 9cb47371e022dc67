// Small RAII wrappers over POSIX TCP sockets for the coordinator link.
#pragma once
#include <cstdint>
#include <string>

namespace pipellm::link {

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    const int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset();

 private:
  int fd_ = -1;
};

// "host:port" (IPv4 address or name; port 0 asks the kernel for a free one when listening).
struct HostPort {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  // Throws InvalidArgument naming the text.
  static HostPort parse(const std::string& text);
  std::string str() const { return host + ":" + std::to_string(port); }
};

class TcpListener {
 public:
  // Binds and listens. Throws LinkError with the address and errno text.
  explicit TcpListener(const HostPort& addr);
  uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }
  // The next connection, or an invalid Fd after timeout_ms (-1: wait forever). `peer`, when
  // given, gets the connection's "address:port".
  Fd accept(int timeout_ms, std::string* peer = nullptr);

 private:
  Fd fd_;
  std::string host_;
  uint16_t port_ = 0;
};

// Connects, retrying refused connections until timeout_ms has passed (the peer may still be
// starting). Throws LinkError naming the address.
Fd tcp_connect(const HostPort& addr, int timeout_ms);

}  // namespace pipellm::link

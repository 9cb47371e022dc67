#include "engine/link/socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "engine/link/codec.h"

namespace pipellm::link {

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

HostPort HostPort::parse(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    throw InvalidArgument("address '" + text + "': expected host:port");
  }
  HostPort hp;
  hp.host = colon == 0 ? "127.0.0.1" : text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  unsigned long v = 0;
  for (char c : port) {
    if (c < '0' || c > '9') throw InvalidArgument("address '" + text + "': port '" + port + "' is not a number");
    v = v * 10 + static_cast<unsigned long>(c - '0');
    if (v > 65535) throw InvalidArgument("address '" + text + "': port " + port + " is out of range");
  }
  hp.port = static_cast<uint16_t>(v);
  return hp;
}

namespace {

std::string errno_text(int e) { return std::string(std::strerror(e)); }

sockaddr_in resolve(const HostPort& addr) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(addr.port);
  if (::inet_pton(AF_INET, addr.host.c_str(), &sa.sin_addr) == 1) return sa;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(addr.host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    throw LinkError("link: cannot resolve '" + addr.host + "': " + ::gai_strerror(rc));
  }
  sa.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  ::freeaddrinfo(res);
  return sa;
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

TcpListener::TcpListener(const HostPort& addr) : host_(addr.host) {
  const sockaddr_in sa = resolve(addr);
  fd_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd_.valid()) throw LinkError("link: socket(): " + errno_text(errno));
  int one = 1;
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    throw LinkError("link: bind " + addr.str() + ": " + errno_text(errno));
  }
  if (::listen(fd_.get(), 4) != 0) throw LinkError("link: listen " + addr.str() + ": " + errno_text(errno));
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.sin_port);
}

Fd TcpListener::accept(int timeout_ms, std::string* peer) {
  pollfd p{fd_.get(), POLLIN, 0};
  const int rc = ::poll(&p, 1, timeout_ms);
  if (rc < 0 && errno != EINTR) throw LinkError("link: poll on listener: " + errno_text(errno));
  if (rc <= 0) return Fd();
  sockaddr_in from{};
  socklen_t from_len = sizeof from;
  Fd c(::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&from), &from_len, SOCK_CLOEXEC));
  if (!c.valid()) {
    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return Fd();
    throw LinkError("link: accept: " + errno_text(errno));
  }
  set_nodelay(c.get());
  if (peer != nullptr) {
    char ip[INET_ADDRSTRLEN] = "?";
    ::inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
    *peer = std::string(ip) + ":" + std::to_string(ntohs(from.sin_port));
  }
  return c;
}

Fd tcp_connect(const HostPort& addr, int timeout_ms) {
  const sockaddr_in sa = resolve(addr);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int last = 0;
  for (;;) {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) throw LinkError("link: socket(): " + errno_text(errno));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0) {
      set_nodelay(fd.get());
      return fd;
    }
    last = errno;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw LinkError("link: cannot connect to " + addr.str() + ": " + errno_text(last));
}

}  // namespace pipellm::link

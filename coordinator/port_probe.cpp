#include "coordinator/port_probe.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pipellm::coord {

std::string bind_failure(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string h = host.size() > 1 && host.front() == '[' ? host.substr(1, host.size() - 2) : host;
  const std::string service = std::to_string(port);
  if (::getaddrinfo(h.empty() ? nullptr : h.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) {
    return "cannot resolve the host '" + host + "'";
  }
  std::string why = "no address to bind";
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // as the servers do; never SO_REUSEPORT
    const bool ok = ::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1) == 0;
    const int err = errno;
    ::close(fd);
    if (ok) {
      why.clear();
      break;
    }
    why = std::strerror(err);
    if (err == EADDRINUSE) why += ": another process listens there";
  }
  ::freeaddrinfo(res);
  return why;
}

}  // namespace pipellm::coord

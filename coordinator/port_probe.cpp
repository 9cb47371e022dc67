#include "coordinator/port_probe.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pipellm::coord {

int listen_on(const std::string& host, int port, int backlog, int socket_flags, std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string h = host.size() > 1 && host.front() == '[' ? host.substr(1, host.size() - 2) : host;
  const std::string service = std::to_string(port);
  if (::getaddrinfo(h.empty() ? nullptr : h.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) {
    why = "cannot resolve the host '" + host + "'";
    return -1;
  }
  why = "no address to bind";
  int out = -1;
  for (addrinfo* a = res; a != nullptr && out < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | socket_flags | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // never SO_REUSEPORT: the port is ours alone
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, backlog) == 0) {
      out = fd;
      why.clear();
    } else {
      const int err = errno;
      ::close(fd);
      why = std::strerror(err);
      if (err == EADDRINUSE) why += ": another process listens there";
    }
  }
  ::freeaddrinfo(res);
  return out;
}

std::string bind_failure(const std::string& host, int port) {
  std::string why;
  const int fd = listen_on(host, port, 1, 0, why);
  if (fd >= 0) ::close(fd);
  return why;
}

}  // namespace pipellm::coord

// Listening sockets of the front doors, and why a listen address cannot be taken, for a clear
// startup error (gRPC's server builder only says that it failed; bind_failure binds the address
// the same way, no port reuse, and reports errno).
#pragma once
#include <string>

namespace pipellm::coord {

// A socket listening on `host`:`port` (port 0: any; "[v6]" hosts), bound as every front door
// binds (SO_REUSEADDR, never SO_REUSEPORT), opened with `socket_flags` (SOCK_NONBLOCK ...) and
// close-on-exec; -1 with the reason in `why` ("cannot resolve the host ...", "Address already in
// use: another process listens there").
int listen_on(const std::string& host, int port, int backlog, int socket_flags, std::string& why);

// "" when `host`:`port` can be bound now, else the reason ("Address already in use: another
// process listens there", "cannot resolve the host").
std::string bind_failure(const std::string& host, int port);

}  // namespace pipellm::coord

// Why a listen address cannot be taken, for a clear startup error. gRPC's server builder only
// says that it failed; this binds the address the same way (no port reuse) and reports errno.
#pragma once
#include <string>

namespace pipellm::coord {

// "" when `host`:`port` can be bound now, else the reason ("Address already in use: another
// process listens there", "cannot resolve the host").
std::string bind_failure(const std::string& host, int port);

}  // namespace pipellm::coord

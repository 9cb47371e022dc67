#include "stage_worker/rank_heartbeat_setup.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "base/error.h"
#include "engine/link/coordinator_link.h"

namespace pipellm {

namespace {

// What rank 0 broadcasts: where to beat, and the launch's token. port 0: no beats.
struct Offer {
  char ip[64] = {};
  int32_t port = 0;
  char token[heartbeat::kTokenBytes] = {};
};

std::string ipv4_text(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN] = {};
  if (::inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip) == nullptr) return "";
  return ip;
}

bool loopback(const sockaddr_in& a) { return (ntohl(a.sin_addr.s_addr) >> 24) == 127; }

// The local address the kernel would send from to reach `host` (a UDP connect sends nothing).
std::string route_to(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), "9", &hints, &res) != 0) return "";
  std::string out;
  for (addrinfo* p = res; p != nullptr && out.empty(); p = p->ai_next) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_in local{};
    socklen_t len = sizeof local;
    if (::connect(fd, p->ai_addr, p->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 && local.sin_addr.s_addr != 0 &&
        !loopback(local)) {
      out = ipv4_text(local);
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return out;
}

// `host`'s own first IPv4 address that is not loopback.
std::string own_address(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return "";
  std::string out;
  for (addrinfo* p = res; p != nullptr && out.empty(); p = p->ai_next) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(p->ai_addr);
    if (!loopback(*a)) out = ipv4_text(*a);
  }
  ::freeaddrinfo(res);
  return out;
}

}  // namespace

std::string heartbeat_bind_address(const std::vector<RankProcess>& ranks, const std::string& host) {
  const RankProcess* other = nullptr;
  for (const RankProcess& r : ranks) {
    if (r.host != host) {
      other = &r;
      break;
    }
  }
  if (other == nullptr) return "127.0.0.1";
  const std::string routed = route_to(other->host);
  return routed.empty() ? own_address(host) : routed;
}

RankHeartbeat start_rank_heartbeat(const MpiSession& session, const std::vector<RankProcess>& ranks,
                                   const StepTracker& tracker, bool quiet) {
  RankHeartbeat hb;
  Offer offer;
  const int rank = session.rank();
  if (rank == 0 && session.size() > 1) {
    try {
      const std::string ip = heartbeat_bind_address(ranks, session.host());
      if (ip.empty()) throw Error("no IPv4 address of " + session.host() + " reaches the other hosts");
      if (ip.size() >= sizeof offer.ip) throw Error("address too long: " + ip);
      const std::string token = link::new_link_secret();
      if (token.size() != heartbeat::kTokenBytes) throw Error("a token of " + std::to_string(token.size()) + " bytes");
      std::vector<heartbeat::RankIdentity> expected;
      for (const RankProcess& r : ranks) {
        if (r.rank > 0) expected.push_back({r.rank, r.pid, r.host});
      }
      auto registry = std::make_unique<heartbeat::HeartbeatRegistry>();
      hb.server = std::make_unique<heartbeat::HeartbeatServer>(ip, token, std::move(expected), *registry);
      hb.registry = std::move(registry);
      std::memcpy(offer.ip, ip.data(), ip.size());
      offer.port = hb.server->port();
      std::memcpy(offer.token, token.data(), token.size());
    } catch (const std::exception& e) {
      hb.server.reset();
      hb.registry.reset();
      offer = Offer{};
      std::fprintf(stderr, "pipellm-stage: rank 0: no rank heartbeats (%s); a hang is diagnosed from /proc of this host only\n",
                   e.what());
    }
  }
  mpi_check(MPI_Bcast(&offer, sizeof offer, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast of the heartbeat address");
  int ok = 0;
  if (rank > 0 && offer.port > 0) {
    const std::string ip(offer.ip, strnlen(offer.ip, sizeof offer.ip));
    try {
      hb.sender = std::make_unique<heartbeat::HeartbeatSender>(ip, offer.port, std::string(offer.token, sizeof offer.token),
                                                               rank, tracker);
      ok = 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pipellm-stage: rank %d (host %s): no heartbeat to rank 0 (%s); the run goes on without it\n", rank,
                   session.host().c_str(), e.what());
    }
  }
  std::vector<int> oks(rank == 0 ? static_cast<size_t>(session.size()) : 0);
  mpi_check(MPI_Gather(&ok, 1, MPI_INT, oks.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Gather of the heartbeat connections");
  if (rank == 0 && hb.server) {
    std::string missing;
    for (size_t r = 1; r < oks.size(); ++r) {
      if (oks[r] == 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    }
    if (!missing.empty()) {
      std::fprintf(stderr, "pipellm-stage: rank 0: no heartbeat from rank%s %s (they could not connect to %s:%d); "
                   "their hangs are diagnosed from /proc only\n", missing.find(',') == std::string::npos ? "" : "s",
                   missing.c_str(), offer.ip, offer.port);
    } else if (!quiet) {
      std::fprintf(stderr, "pipellm-stage: rank 0: heartbeats of %d rank%s at %s:%d\n", session.size() - 1,
                   session.size() == 2 ? "" : "s", offer.ip, offer.port);
    }
  }
  return hb;
}

}  // namespace pipellm

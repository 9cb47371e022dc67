// Setting up the rank heartbeats (engine/pipeline/rank_heartbeat.h) of a serving pipeline, at
// startup, on the main thread: rank 0 picks the address its peers can reach (loopback when every
// rank shares its host, else the address of the interface that routes to the other hosts),
// listens there and broadcasts address, port and a fresh per-launch token (MPI_Bcast); every
// other rank connects and starts beating; MPI_Gather tells rank 0 who could. Nothing here fails
// the run: a rank that cannot listen or connect says so once on stderr, and rank 0 names stuck
// ranks from /proc alone (ranks on its host), as without beats.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/pipeline/rank_heartbeat.h"
#include "engine/pipeline/step_tracker.h"
#include "stage_worker/mpi_env.h"
#include "stage_worker/rank_processes.h"

namespace pipellm {

struct RankHeartbeat {
  // Rank 0: the beats of the ranks that connected (none may have).
  std::unique_ptr<heartbeat::HeartbeatRegistry> registry;
  std::unique_ptr<heartbeat::HeartbeatServer> server;
  // Other ranks: this rank's beats (null when it could not connect).
  std::unique_ptr<heartbeat::HeartbeatSender> sender;
};

// Collective over MPI_COMM_WORLD (every rank calls it, after gather_rank_processes). `ranks`: the
// full list on rank 0 (ignored elsewhere). `tracker`: this rank's runner's; it must outlive the
// result. `quiet`: only failures are logged.
RankHeartbeat start_rank_heartbeat(const MpiSession& session, const std::vector<RankProcess>& ranks,
                                   const StepTracker& tracker, bool quiet);

// The address rank 0 listens on for beats from `ranks`: "127.0.0.1" when all share `host`, else
// the local IPv4 address that routes to the first other host (or `host`'s own), "" when none.
std::string heartbeat_bind_address(const std::vector<RankProcess>& ranks, const std::string& host);

}  // namespace pipellm

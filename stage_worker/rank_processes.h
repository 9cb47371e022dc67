// Who the pipeline's ranks are (pid and host, gathered to rank 0 once at startup) and what the
// kernel says about them: when steps stop coming back, rank 0 names the rank holding them up
// if it can see it (a rank on its own host that is stopped, gone, or stuck in the kernel).
#pragma once
#include <string>
#include <vector>

#include "engine/pipeline/rank_heartbeat.h"
#include "stage_worker/mpi_env.h"

namespace pipellm {

struct RankProcess {
  int rank = 0;
  long pid = 0;
  std::string host;
};

// Collective over MPI_COMM_WORLD (every rank calls it); the full list on rank 0, empty elsewhere.
std::vector<RankProcess> gather_rank_processes(const MpiSession& session);

// The state letter of /proc/PID/stat ('R', 'S', 'D', 'T', 'Z', ...), or 0 when there is none.
char proc_state(long pid);

// The ranks after rank 0 that /proc shows in trouble, on `host` only (others cannot be seen):
// "rank 1 (pid 4242) is stopped (SIGSTOP or a debugger)", one note per rank in rank order.
std::vector<heartbeat::RankNote> stuck_rank_notes(const std::vector<RankProcess>& ranks, const std::string& host);
// The same joined by "; "; "" for none.
std::string describe_stuck_ranks(const std::vector<RankProcess>& ranks, const std::string& host);

}  // namespace pipellm

#include "stage_worker/rank_processes.h"

#include <unistd.h>

#include <cstring>
#include <fstream>

namespace pipellm {

namespace {

constexpr int kHostBytes = 256;

// What a state letter means for a rank that should be computing or waiting on MPI.
const char* trouble(char state) {
  switch (state) {
    case 0: return "has exited";
    case 'T':
    case 't': return "is stopped (SIGSTOP or a debugger)";
    case 'Z':
    case 'X': return "has exited";
    case 'D': return "is stuck in the kernel (uninterruptible sleep)";
    default: return nullptr;
  }
}

}  // namespace

std::vector<RankProcess> gather_rank_processes(const MpiSession& session) {
  long mine = static_cast<long>(::getpid());
  char host[kHostBytes] = {};
  std::strncpy(host, session.host().c_str(), sizeof host - 1);
  const bool root = session.rank() == 0;
  std::vector<long> pids(root ? static_cast<size_t>(session.size()) : 0);
  std::vector<char> hosts(root ? static_cast<size_t>(session.size()) * kHostBytes : 0);
  mpi_check(MPI_Gather(&mine, 1, MPI_LONG, pids.data(), 1, MPI_LONG, 0, MPI_COMM_WORLD), "MPI_Gather of the ranks' pids");
  mpi_check(MPI_Gather(host, kHostBytes, MPI_CHAR, hosts.data(), kHostBytes, MPI_CHAR, 0, MPI_COMM_WORLD),
            "MPI_Gather of the ranks' hosts");
  std::vector<RankProcess> out;
  for (size_t r = 0; r < pids.size(); ++r) {
    const char* h = hosts.data() + r * kHostBytes;
    out.push_back({static_cast<int>(r), pids[r], std::string(h, strnlen(h, kHostBytes))});
  }
  return out;
}

char proc_state(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return 0;
  // "PID (COMM) S ...": COMM may hold spaces and parentheses; the state follows the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return 0;
  return stat[close + 2];
}

std::vector<heartbeat::RankNote> stuck_rank_notes(const std::vector<RankProcess>& ranks, const std::string& host) {
  std::vector<heartbeat::RankNote> out;
  for (const RankProcess& r : ranks) {
    if (r.rank == 0 || r.host != host) continue;
    const char* why = trouble(proc_state(r.pid));
    if (why == nullptr) continue;
    out.push_back({r.rank, "rank " + std::to_string(r.rank) + " (pid " + std::to_string(r.pid) + ") " + why});
  }
  return out;
}

std::string describe_stuck_ranks(const std::vector<RankProcess>& ranks, const std::string& host) {
  std::string out;
  for (const heartbeat::RankNote& n : stuck_rank_notes(ranks, host)) out += (out.empty() ? "" : "; ") + n.text;
  return out;
}

}  // namespace pipellm

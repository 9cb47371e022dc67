// One rank of `mpirun -np N pipellm-stage --config X.yaml`: loads the config, plans the
// partition (every rank computes the same plan from the same file), builds stage `rank` with only
// its own tensors, connects the transport (NCCL for all-GPU pipelines when built, else MPI) and
// runs the head (rank 0: scheduler, requests, output) or a follower loop.
// Any error ends every rank through MPI_Abort with a message naming the failed rank.
#pragma once
#include "stage_worker/mpi_env.h"
#include "stage_worker/worker_options.h"

namespace pipellm {

// Returns the process exit code (0 on success); failures do not return (MPI_Abort).
int run_stage_worker(const MpiSession& session, const WorkerOptions& o);

}  // namespace pipellm

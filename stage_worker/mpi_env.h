// MPI process environment for the stage worker: RAII init/finalize, return-code checks, abort.
// Only stage_worker/ includes mpi.h, so the engine builds without MPI.
#pragma once
#include <mpi.h>

#include <string>

namespace pipellm {

// Throws Error("WHAT: MPI error text") unless rc == MPI_SUCCESS.
void mpi_check(int rc, const std::string& what);

class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& host() const { return host_; }

  // Prints "pipellm-stage: rank R (host H): error: WHAT" and ends every rank (MPI_Abort).
  [[noreturn]] void abort(const std::string& what, int code = 1) const;

 private:
  int rank_ = 0;
  int size_ = 1;
  std::string host_;
};

// A duplicated communicator (the pipeline's own), freed on destruction; errors return codes.
class MpiComm {
 public:
  explicit MpiComm(MPI_Comm parent);
  ~MpiComm();
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace pipellm

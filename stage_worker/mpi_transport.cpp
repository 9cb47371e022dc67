#include "stage_worker/mpi_transport.h"

#include <chrono>
#include <climits>
#include <cstring>
#include <thread>

#include "base/error.h"

namespace pipellm {

MpiTransport::MpiTransport(const MpiSession& session, MPI_Comm comm, std::chrono::microseconds spin)
    : session_(session), comm_(comm), spin_(spin) {
  mpi_check(MPI_Comm_rank(comm_.get(), &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(comm_.get(), &size_), "MPI_Comm_size");
}

MpiTransport::~MpiTransport() {
  // After flush() nothing is pending; on an error path MPI_Abort ends the process first.
  for (auto& p : pending_) {
    if (p->request != MPI_REQUEST_NULL) MPI_Wait(&p->request, MPI_STATUS_IGNORE);
  }
}

void MpiTransport::check_peer(int peer) const {
  if (peer < 0 || peer >= size_ || peer == rank_) {
    throw InvalidArgument("mpi transport: rank " + std::to_string(rank_) + " cannot talk to rank " + std::to_string(peer));
  }
}

void MpiTransport::post(int peer, int tag, std::vector<uint8_t> bytes) {
  check_peer(peer);
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    throw Error("mpi transport: message of " + std::to_string(bytes.size()) + " bytes to rank " + std::to_string(peer) +
                " exceeds MPI's int count");
  }
  auto p = std::make_unique<Pending>();
  p->bytes = std::move(bytes);
  mpi_check(MPI_Isend(p->bytes.data(), static_cast<int>(p->bytes.size()), MPI_BYTE, peer, tag, comm_.get(), &p->request),
            "MPI_Isend from rank " + std::to_string(rank_) + " to rank " + std::to_string(peer));
  pending_.push_back(std::move(p));
  reap();
}

void MpiTransport::reap() {
  while (!pending_.empty()) {
    int done = 0;
    mpi_check(MPI_Test(&pending_.front()->request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (!done) return;
    pending_.pop_front();
  }
}

bool MpiTransport::probe_for(int peer, int tag, std::chrono::microseconds limit, MPI_Status& st) {
  check_peer(peer);
  int flag = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    mpi_check(MPI_Iprobe(peer, tag, comm_.get(), &flag, &st),
              "MPI_Iprobe on rank " + std::to_string(rank_) + " for rank " + std::to_string(peer));
    if (flag) return true;
    reap();
    // Spin for up to spin_ (the next message of a running pipeline is usually that close),
    // then sleep between polls: 20 us, and 200 us after a second without traffic, so an idle
    // rank leaves the CPU to busy ones on a shared machine.
    const auto idle = std::chrono::steady_clock::now() - t0;
    if (std::chrono::duration_cast<std::chrono::microseconds>(idle) >= limit) return false;
    if (idle > std::chrono::seconds(1) + spin_) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    } else if (idle > spin_) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
}

MPI_Status MpiTransport::wait_for(int peer, int tag) {
  MPI_Status st;
  probe_for(peer, tag, std::chrono::microseconds::max(), st);
  return st;
}

bool MpiTransport::poll_message(int peer, std::chrono::microseconds wait) {
  MPI_Status st;
  return probe_for(peer, kTagMessage, wait, st);
}

void MpiTransport::send_message(int peer, std::vector<uint8_t> bytes) { post(peer, kTagMessage, std::move(bytes)); }

std::vector<uint8_t> MpiTransport::recv_message(int peer) { return recv_tagged(peer, kTagMessage); }

std::vector<uint8_t> MpiTransport::recv_tagged(int peer, int tag) {
  MPI_Status st = wait_for(peer, tag);
  int n = 0;
  mpi_check(MPI_Get_count(&st, MPI_BYTE, &n), "MPI_Get_count");
  std::vector<uint8_t> b(static_cast<size_t>(n));
  mpi_check(MPI_Recv(b.data(), n, MPI_BYTE, peer, tag, comm_.get(), MPI_STATUS_IGNORE),
            "MPI_Recv on rank " + std::to_string(rank_) + " from rank " + std::to_string(peer));
  return b;
}

void MpiTransport::send_side(int peer, int tag, std::vector<uint8_t> bytes) {
  if (tag < kFirstSideTag) throw InvalidArgument("mpi transport: side tag " + std::to_string(tag) + " is reserved");
  post(peer, tag, std::move(bytes));
}

std::vector<uint8_t> MpiTransport::recv_side(int peer, int tag) {
  if (tag < kFirstSideTag) throw InvalidArgument("mpi transport: side tag " + std::to_string(tag) + " is reserved");
  return recv_tagged(peer, tag);
}

void MpiTransport::send_activations(int peer, const ActivationRows& rows, size_t count) {
  const float* data = rows.data;
  if (rows.space != MemorySpace::Host) throw InvalidArgument("mpi transport: activations must be in host memory (stage them)");
  std::vector<uint8_t> b(count * sizeof(float));
  if (count != 0) std::memcpy(b.data(), data, b.size());
  post(peer, kTagActivations, std::move(b));
}

void MpiTransport::recv_activations(int peer, const ActivationRows& rows, size_t count) {
  float* data = rows.data;
  if (rows.space != MemorySpace::Host) throw InvalidArgument("mpi transport: activations must be in host memory (stage them)");
  MPI_Status st = wait_for(peer, kTagActivations);
  int n = 0;
  mpi_check(MPI_Get_count(&st, MPI_BYTE, &n), "MPI_Get_count");
  if (static_cast<size_t>(n) != count * sizeof(float)) {
    throw Error("mpi transport: rank " + std::to_string(rank_) + " expected " + std::to_string(count) +
                " activations from rank " + std::to_string(peer) + ", got " + std::to_string(static_cast<size_t>(n) / sizeof(float)));
  }
  mpi_check(MPI_Recv(data, n, MPI_BYTE, peer, kTagActivations, comm_.get(), MPI_STATUS_IGNORE),
            "MPI_Recv on rank " + std::to_string(rank_) + " from rank " + std::to_string(peer));
}

void MpiTransport::flush() {
  for (auto& p : pending_) {
    mpi_check(MPI_Wait(&p->request, MPI_STATUS_IGNORE), "MPI_Wait (flush) on rank " + std::to_string(rank_));
  }
  pending_.clear();
}

void MpiTransport::abort(const std::string& what) { session_.abort(what); }

}  // namespace pipellm

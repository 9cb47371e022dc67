// Pipeline transport over MPI point-to-point messages: CPU ranks (and the control messages of the
// NCCL and IPC transports, which move GPU rows themselves). Sends are non-blocking (MPI_Isend
// of a buffer the transport owns until completion); receives poll with MPI_Iprobe and back off
// to short sleeps, so an idle rank does not steal the CPU from a busy one on a shared machine.
#pragma once
#include <chrono>
#include <deque>
#include <memory>
#include <vector>

#include "engine/pipeline/transport.h"
#include "stage_worker/mpi_env.h"

namespace pipellm {

// The receive spin of GPU ranks' control messages (see MpiTransport's constructor).
constexpr std::chrono::microseconds kGpuRankSpin{20000};

class MpiTransport : public Transport {
 public:
  // Uses a duplicate of `comm`; `session` prints and aborts on failure. A receive spins for
  // `spin` before it starts sleeping between polls: GPU ranks, whose host mostly waits for the
  // next message while the GPU computes, take a long spin (a sleep's wake-up costs tens of
  // microseconds per hop); CPU ranks keep the CPU for their own threads.
  MpiTransport(const MpiSession& session, MPI_Comm comm,
               std::chrono::microseconds spin = std::chrono::microseconds(200));
  ~MpiTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "mpi"; }
  void send_message(int peer, std::vector<uint8_t> bytes) override;
  std::vector<uint8_t> recv_message(int peer) override;
  bool poll_message(int peer, std::chrono::microseconds wait) override;
  void send_activations(int peer, const ActivationRows& rows, size_t count) override;
  void recv_activations(int peer, const ActivationRows& rows, size_t count) override;
  void flush() override;
  [[noreturn]] void abort(const std::string& what) override;

  MPI_Comm comm() const { return comm_.get(); }

  // Side channels for transports layered on this one (IPC notices and acknowledgements): the
  // same ordering and non-blocking send as messages, on their own tag (>= kFirstSideTag).
  static constexpr int kFirstSideTag = 100;
  void send_side(int peer, int tag, std::vector<uint8_t> bytes);
  std::vector<uint8_t> recv_side(int peer, int tag);

 private:
  enum Tag : int { kTagMessage = 11, kTagActivations = 12 };
  struct Pending {
    std::vector<uint8_t> bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  void post(int peer, int tag, std::vector<uint8_t> bytes);
  MPI_Status wait_for(int peer, int tag);  // probes until a message is there
  std::vector<uint8_t> recv_tagged(int peer, int tag);
  // Probes until a message is there (true) or `limit` has passed (false).
  bool probe_for(int peer, int tag, std::chrono::microseconds limit, MPI_Status& st);
  void reap();                              // frees completed sends
  void check_peer(int peer) const;

  const MpiSession& session_;
  MpiComm comm_;
  int rank_ = 0, size_ = 1;
  std::deque<std::unique_ptr<Pending>> pending_;
  std::chrono::microseconds spin_;
};

}  // namespace pipellm

// How pipeline ranks talk: implementations are MPI (stage_worker/mpi_transport, CPU ranks and the
// host-staged fallback), NCCL (stage_worker/nccl_transport, GPU ranks) and in-process
// (inproc_transport, tests and single-process multi-stage runs).
//
// Contract:
// - Between one ordered pair of ranks, messages arrive in the order they were sent: a step's
//   header, then its activations, then the next step's header...
// - send_* may return before the peer has received (the transport keeps its own copy or keeps
//   the caller's buffer alive until delivery, see each method), so that ranks whose only
//   blocking call is a receive can never deadlock in a cycle (head -> ... -> tail -> head).
// - A failure on any rank makes every blocked call on the other ranks throw (or the process
//   end through MPI_Abort) within seconds; messages name the rank that failed.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pipellm {

// Where activation buffers live; GPU transports take device pointers.
enum class MemorySpace { Host, Device };

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* name() const = 0;

  // A small control message (step header, step result). Takes ownership of the bytes.
  virtual void send_message(int peer, std::vector<uint8_t> bytes) = 0;
  virtual std::vector<uint8_t> recv_message(int peer) = 0;
  // True when a message from `peer` has arrived (recv_message will not wait for it); waits at
  // most `wait` for one. Lets a serving head watch its requests while steps are in flight.
  virtual bool poll_message(int peer, std::chrono::microseconds wait) = 0;

  // Activations: `count` floats. The data is copied (host) or enqueued (device) before the call
  // returns, so the caller may reuse the buffer at once.
  virtual void send_activations(int peer, const float* data, size_t count, MemorySpace space) = 0;
  // Fills `data` with exactly `count` floats; throws if the peer sent a different amount.
  virtual void recv_activations(int peer, float* data, size_t count, MemorySpace space) = 0;

  // Waits until everything sent has been delivered (before shutdown).
  virtual void flush() = 0;

  // Stops the whole pipeline because this rank failed; never returns normally for MPI
  // (MPI_Abort). `what` is printed with the rank.
  virtual void abort(const std::string& what) = 0;
};

}  // namespace pipellm

// How pipeline ranks talk: implementations are MPI (stage_worker/mpi_transport, CPU ranks),
// NCCL (stage_worker/nccl_transport, GPU ranks on different GPUs), CUDA IPC
// (stage_worker/ipc_transport, GPU ranks sharing one GPU) and in-process (inproc_transport,
// tests and single-process multi-stage runs).
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

#include "engine/model/activation_rows.h"

namespace pipellm {

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

  // Whether send/recv_activations take rows in this memory space (device rows go peer to peer
  // on the rows' stream; a host-only transport gets them staged by the caller).
  virtual bool moves(MemorySpace space) const { return space == MemorySpace::Host; }
  // Activations: `count` floats. Host data is copied before the call returns; device data is
  // enqueued on rows.stream (the caller orders its next writes to the buffer after it).
  virtual void send_activations(int peer, const ActivationRows& rows, size_t count) = 0;
  // Fills the rows with exactly `count` floats (device: enqueued on rows.stream); throws if the
  // peer sent a different amount.
  virtual void recv_activations(int peer, const ActivationRows& rows, size_t count) = 0;

  // Waits until everything sent has been delivered (before shutdown).
  virtual void flush() = 0;

  // Stops the whole pipeline because this rank failed; never returns normally for MPI
  // (MPI_Abort). `what` is printed with the rank.
  virtual void abort(const std::string& what) = 0;
};

}  // namespace pipellm

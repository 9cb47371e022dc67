// Pipeline transport for GPU ranks that share one GPU (the multi-rank case a single-GPU machine
// runs; NCCL refuses two ranks on one device): activation rows move device to device through
// CUDA IPC, no host staging; step headers and results go over MPI (MpiTransport).
//
// Rank r owns an outbox of kSlots device buffers that rank r+1 maps (cudaIpcOpenMemHandle).
// Sending step s: wait (host) until rank r+1 has acknowledged step s - kSlots, order the stream
// after r+1's copy out of slot s % kSlots (an interprocess event it recorded), copy the rows into
// the slot on the stage's stream, record the slot's "written" event, post a notice {slot, count}.
// Receiving: take the notice, make the stage's stream wait for "written", copy the slot into the
// stage's input rows, record "consumed", acknowledge. Hosts never wait for GPU work; the only
// host wait is for an acknowledgement, which a receiver sends as soon as it has queued its copy,
// so the ring head -> ... -> tail -> head cannot deadlock (the tail never sends rows).
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "stage_worker/mpi_transport.h"

namespace pipellm {

class IpcTransport : public Transport {
 public:
  static constexpr int kSlots = 4;
  // Collective over `comm`: every rank selects `device` and exchanges its IPC handles with its
  // neighbours. `slot_floats`: the most floats one step sends (max batch tokens x n_embd).
  IpcTransport(const MpiSession& session, MPI_Comm comm, int device, size_t slot_floats);
  ~IpcTransport() override;
  IpcTransport(const IpcTransport&) = delete;
  IpcTransport& operator=(const IpcTransport&) = delete;

  int rank() const override { return control_.rank(); }
  int size() const override { return control_.size(); }
  const char* name() const override { return "ipc"; }
  void send_message(int peer, std::vector<uint8_t> bytes) override { control_.send_message(peer, std::move(bytes)); }
  std::vector<uint8_t> recv_message(int peer) override { return control_.recv_message(peer); }
  bool poll_message(int peer, std::chrono::microseconds wait) override { return control_.poll_message(peer, wait); }
  bool moves(MemorySpace) const override { return true; }
  void send_activations(int peer, const ActivationRows& rows, size_t count) override;
  void recv_activations(int peer, const ActivationRows& rows, size_t count) override;
  void flush() override { control_.flush(); }
  [[noreturn]] void abort(const std::string& what) override { session_.abort(what); }

 private:
  enum SideTag : int { kNotice = MpiTransport::kFirstSideTag, kAck };
  std::string who() const;

  MpiTransport control_;
  const MpiSession& session_;
  size_t slot_floats_ = 0;
  // Towards rank + 1: our outbox, its "written" events, rank + 1's "consumed" events (opened).
  float* outbox_ = nullptr;
  std::array<cudaEvent_t, kSlots> written_{};
  std::array<cudaEvent_t, kSlots> next_consumed_{};
  int64_t sent_ = 0, acked_ = 0;
  // From rank - 1: its outbox and "written" events (opened), our "consumed" events.
  float* prev_outbox_ = nullptr;
  std::array<cudaEvent_t, kSlots> prev_written_{};
  std::array<cudaEvent_t, kSlots> consumed_{};
};

}  // namespace pipellm

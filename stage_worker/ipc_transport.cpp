#include "stage_worker/ipc_transport.h"

#include <cstring>
#include <string>

#include "base/error.h"

namespace pipellm {

namespace {

constexpr int kTagHandles = 7;  // constructor-time handle exchange (blocking MPI)

void cuda_check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error(what + ": CUDA error: " + cudaGetErrorString(e));
}

struct Notice {
  int32_t slot;
  uint64_t count;
};

// What rank r sends rank r+1 (its outbox, "written" events) or r+1 sends r ("consumed" events).
struct Handles {
  cudaIpcMemHandle_t outbox;
  cudaIpcEventHandle_t events[IpcTransport::kSlots];
};

cudaEvent_t ipc_event() {
  cudaEvent_t e = nullptr;
  cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventInterprocess), "cudaEventCreate (IPC)");
  return e;
}

}  // namespace

std::string IpcTransport::who() const { return "ipc transport (rank " + std::to_string(control_.rank()) + ")"; }

IpcTransport::IpcTransport(const MpiSession& session, MPI_Comm comm, int device, size_t slot_floats)
    : control_(session, comm, kGpuRankSpin), session_(session), slot_floats_(slot_floats) {
  const int r = control_.rank(), n = control_.size();
  cuda_check(cudaSetDevice(device), who() + ": cudaSetDevice");
  const MPI_Comm c = control_.comm();
  if (r + 1 < n) {  // our outbox and "written" events for rank + 1
    void* p = nullptr;
    cuda_check(cudaMalloc(&p, kSlots * slot_floats_ * sizeof(float)),
               who() + ": outbox of " + std::to_string(kSlots) + " x " + std::to_string(slot_floats_) + " floats");
    outbox_ = static_cast<float*>(p);
    Handles h{};
    cuda_check(cudaIpcGetMemHandle(&h.outbox, outbox_), who() + ": cudaIpcGetMemHandle");
    for (int k = 0; k < kSlots; ++k) {
      written_[k] = ipc_event();
      cuda_check(cudaIpcGetEventHandle(&h.events[k], written_[k]), who() + ": cudaIpcGetEventHandle");
    }
    mpi_check(MPI_Send(&h, sizeof h, MPI_BYTE, r + 1, kTagHandles, c), who() + ": sending IPC handles");
  }
  if (r > 0) {  // rank - 1's outbox and events; our "consumed" events for it
    Handles h{};
    mpi_check(MPI_Recv(&h, sizeof h, MPI_BYTE, r - 1, kTagHandles, c, MPI_STATUS_IGNORE), who() + ": receiving IPC handles");
    void* p = nullptr;
    cuda_check(cudaIpcOpenMemHandle(&p, h.outbox, cudaIpcMemLazyEnablePeerAccess), who() + ": cudaIpcOpenMemHandle");
    prev_outbox_ = static_cast<float*>(p);
    Handles back{};
    for (int k = 0; k < kSlots; ++k) {
      cuda_check(cudaIpcOpenEventHandle(&prev_written_[k], h.events[k]), who() + ": cudaIpcOpenEventHandle");
      consumed_[k] = ipc_event();
      cuda_check(cudaIpcGetEventHandle(&back.events[k], consumed_[k]), who() + ": cudaIpcGetEventHandle");
    }
    mpi_check(MPI_Send(&back, sizeof back, MPI_BYTE, r - 1, kTagHandles, c), who() + ": sending IPC handles");
  }
  if (r + 1 < n) {
    Handles h{};
    mpi_check(MPI_Recv(&h, sizeof h, MPI_BYTE, r + 1, kTagHandles, c, MPI_STATUS_IGNORE), who() + ": receiving IPC handles");
    for (int k = 0; k < kSlots; ++k) {
      cuda_check(cudaIpcOpenEventHandle(&next_consumed_[k], h.events[k]), who() + ": cudaIpcOpenEventHandle");
    }
  }
}

IpcTransport::~IpcTransport() {
  for (auto* arr : {&written_, &next_consumed_, &prev_written_, &consumed_}) {
    for (cudaEvent_t e : *arr) {
      if (e != nullptr) cudaEventDestroy(e);
    }
  }
  if (prev_outbox_ != nullptr) cudaIpcCloseMemHandle(prev_outbox_);
  if (outbox_ != nullptr) cudaFree(outbox_);
}

void IpcTransport::send_activations(int peer, const ActivationRows& rows, size_t count) {
  if (rows.space == MemorySpace::Host) return control_.send_activations(peer, rows, count);
  if (peer != rank() + 1) throw InvalidArgument(who() + ": device rows go to the next rank only, not " + std::to_string(peer));
  if (count > slot_floats_) {
    throw InvalidArgument(who() + ": " + std::to_string(count) + " floats exceed the outbox slot of " +
                          std::to_string(slot_floats_));
  }
  auto stream = static_cast<cudaStream_t>(rows.stream);
  const int k = static_cast<int>(sent_ % kSlots);
  // The slot's previous rows must have been copied out: wait for that step's acknowledgement
  // (sent once the receiver queued its copy), then order our write after the copy itself.
  while (acked_ + kSlots <= sent_) {
    control_.recv_side(peer, kAck);
    ++acked_;
  }
  if (sent_ >= kSlots) cuda_check(cudaStreamWaitEvent(stream, next_consumed_[k], 0), who() + ": wait for consumed");
  float* slot = outbox_ + static_cast<size_t>(k) * slot_floats_;
  cuda_check(cudaMemcpyAsync(slot, rows.data, count * sizeof(float), cudaMemcpyDeviceToDevice, stream), who() + ": copy in");
  cuda_check(cudaEventRecord(written_[k], stream), who() + ": record written");
  std::vector<uint8_t> b(sizeof(Notice));
  const Notice nt{k, count};
  std::memcpy(b.data(), &nt, sizeof nt);
  control_.send_side(peer, kNotice, std::move(b));
  ++sent_;
}

void IpcTransport::recv_activations(int peer, const ActivationRows& rows, size_t count) {
  if (rows.space == MemorySpace::Host) return control_.recv_activations(peer, rows, count);
  if (peer != rank() - 1) throw InvalidArgument(who() + ": device rows come from the previous rank only, not " + std::to_string(peer));
  const std::vector<uint8_t> b = control_.recv_side(peer, kNotice);
  Notice nt{};
  if (b.size() != sizeof nt) throw Error(who() + ": malformed notice of " + std::to_string(b.size()) + " bytes");
  std::memcpy(&nt, b.data(), sizeof nt);
  if (nt.slot < 0 || nt.slot >= kSlots || nt.count != count) {
    throw Error(who() + ": expected " + std::to_string(count) + " floats from rank " + std::to_string(peer) + ", got " +
                std::to_string(nt.count) + " in slot " + std::to_string(nt.slot));
  }
  auto stream = static_cast<cudaStream_t>(rows.stream);
  cuda_check(cudaStreamWaitEvent(stream, prev_written_[nt.slot], 0), who() + ": wait for written");
  const float* slot = prev_outbox_ + static_cast<size_t>(nt.slot) * slot_floats_;
  cuda_check(cudaMemcpyAsync(rows.data, slot, count * sizeof(float), cudaMemcpyDeviceToDevice, stream), who() + ": copy out");
  cuda_check(cudaEventRecord(consumed_[nt.slot], stream), who() + ": record consumed");
  control_.send_side(peer, kAck, {});
}

}  // namespace pipellm

// Pipeline transport for GPU ranks: activations go GPU to GPU with ncclSend/ncclRecv on the
// transport's stream; step headers and results (small, needed on the host anyway) go over MPI.
// Bootstrap: rank 0 creates the ncclUniqueId and broadcasts it with MPI_Bcast; the communicator
// spans the pipeline's ranks. Device rows go straight from and into the stages' buffers on the
// stages' streams (no host copy, no host wait); host rows are staged through a device buffer. NCCL refuses two ranks on one GPU: use the MPI transport there.
// Built only when CUDA and NCCL are found (PIPELLM_HAVE_NCCL).
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "stage_worker/mpi_transport.h"

namespace pipellm {

class NcclTransport : public Transport {
 public:
  // Selects `device` (cudaSetDevice) and joins the communicator (collective over `comm`).
  NcclTransport(const MpiSession& session, MPI_Comm comm, int device);
  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  int rank() const override { return control_.rank(); }
  int size() const override { return control_.size(); }
  const char* name() const override { return "nccl"; }
  void send_message(int peer, std::vector<uint8_t> bytes) override { control_.send_message(peer, std::move(bytes)); }
  std::vector<uint8_t> recv_message(int peer) override { return control_.recv_message(peer); }
  bool poll_message(int peer, std::chrono::microseconds wait) override { return control_.poll_message(peer, wait); }
  void send_activations(int peer, const ActivationRows& rows, size_t count) override;
  void recv_activations(int peer, const ActivationRows& rows, size_t count) override;
  bool moves(MemorySpace) const override { return true; }
  void flush() override;
  [[noreturn]] void abort(const std::string& what) override;

  cudaStream_t stream() const { return stream_; }

 private:
  float* staging(size_t count);
  void wait_stream(const char* what);  // polls the stream and NCCL's async error

  MpiTransport control_;
  const MpiSession& session_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  float* staging_ = nullptr;
  size_t staging_count_ = 0;
};

}  // namespace pipellm

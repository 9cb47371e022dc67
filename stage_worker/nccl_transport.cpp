#include "stage_worker/nccl_transport.h"

#include <chrono>
#include <thread>

#include "base/error.h"

namespace pipellm {

namespace {

void cuda_check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error(what + ": CUDA error: " + cudaGetErrorString(e));
}

void nccl_check(ncclResult_t r, const std::string& what) {
  if (r != ncclSuccess && r != ncclInProgress) throw Error(what + ": NCCL error: " + ncclGetErrorString(r));
}

}  // namespace

NcclTransport::NcclTransport(const MpiSession& session, MPI_Comm comm, int device)
    : control_(session, comm, kGpuRankSpin), session_(session), device_(device) {
  const std::string who = "nccl transport (rank " + std::to_string(control_.rank()) + ", cuda:" + std::to_string(device) + ")";
  cuda_check(cudaSetDevice(device), who + ": cudaSetDevice");
  cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), who + ": cudaStreamCreate");
  ncclUniqueId id;
  if (control_.rank() == 0) nccl_check(ncclGetUniqueId(&id), who + ": ncclGetUniqueId");
  mpi_check(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, control_.comm()), who + ": MPI_Bcast of the NCCL id");
  nccl_check(ncclCommInitRank(&comm_, control_.size(), id, control_.rank()), who + ": ncclCommInitRank");
}

NcclTransport::~NcclTransport() {
  if (comm_ != nullptr) ncclCommDestroy(comm_);
  if (staging_ != nullptr) cudaFree(staging_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

float* NcclTransport::staging(size_t count) {
  if (count > staging_count_) {
    if (staging_ != nullptr) cuda_check(cudaFree(staging_), "nccl transport: cudaFree");
    staging_ = nullptr;
    staging_count_ = 0;
    void* p = nullptr;
    cuda_check(cudaMalloc(&p, count * sizeof(float)), "nccl transport: staging buffer of " + std::to_string(count) + " floats");
    staging_ = static_cast<float*>(p);
    staging_count_ = count;
  }
  return staging_;
}

void NcclTransport::wait_stream(const char* what) {
  for (int idle = 0;; ++idle) {
    const cudaError_t e = cudaStreamQuery(stream_);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) cuda_check(e, std::string("nccl transport: ") + what);
    ncclResult_t async = ncclSuccess;
    nccl_check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
    nccl_check(async, std::string("nccl transport: ") + what);
    if (idle > 64) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

void NcclTransport::send_activations(int peer, const ActivationRows& rows, size_t count) {
  if (rows.space == MemorySpace::Device) {
    // Straight from the stage's buffer, ordered on its stream after the step that wrote it; the
    // host goes on (the receiver posts its ncclRecv when the step header reaches it).
    nccl_check(ncclSend(rows.data, count, ncclFloat32, peer, comm_, static_cast<cudaStream_t>(rows.stream)),
               "ncclSend to rank " + std::to_string(peer));
    return;
  }
  float* d = staging(count);
  cuda_check(cudaMemcpyAsync(d, rows.data, count * sizeof(float), cudaMemcpyHostToDevice, stream_),
             "nccl transport: stage to device");
  nccl_check(ncclSend(d, count, ncclFloat32, peer, comm_, stream_), "ncclSend to rank " + std::to_string(peer));
  wait_stream("ncclSend");
}

void NcclTransport::recv_activations(int peer, const ActivationRows& rows, size_t count) {
  if (rows.space == MemorySpace::Device) {
    // Into the stage's input buffer on its stream: the step's kernels follow it there.
    nccl_check(ncclRecv(rows.data, count, ncclFloat32, peer, comm_, static_cast<cudaStream_t>(rows.stream)),
               "ncclRecv from rank " + std::to_string(peer));
    return;
  }
  float* d = staging(count);
  nccl_check(ncclRecv(d, count, ncclFloat32, peer, comm_, stream_), "ncclRecv from rank " + std::to_string(peer));
  cuda_check(cudaMemcpyAsync(rows.data, d, count * sizeof(float), cudaMemcpyDeviceToHost, stream_),
             "nccl transport: stage to host");
  wait_stream("ncclRecv");
}

void NcclTransport::flush() {
  wait_stream("flush");
  control_.flush();
}

void NcclTransport::abort(const std::string& what) {
  if (comm_ != nullptr) ncclCommAbort(comm_);
  comm_ = nullptr;
  session_.abort(what);
}

}  // namespace pipellm

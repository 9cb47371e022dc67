// The NCCL transport's device path on one GPU (NCCL refuses two ranks on one device, so the
// two-GPU run waits for a two-GPU machine): a one-rank communicator sends device rows to itself
// on a stream (send and receive in one NCCL group, as a self-exchange must be), and the rows
// arrive bit for bit; host rows are staged through the device the same way.
// Run as `mpirun -np 1 pipellm_nccl_transport_test`; exits 77 (skip) without a GPU.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "stage_worker/nccl_transport.h"

int main(int argc, char** argv) {
  using namespace pipellm;
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("SKIP: no CUDA device present\n");
    return 77;
  }
  MpiSession session(&argc, &argv);
  NcclTransport t(session, MPI_COMM_WORLD, 0);
  constexpr size_t kCount = 3 * 4096 + 7;
  std::vector<float> host(kCount), back(kCount, -1.0f);
  for (size_t i = 0; i < kCount; ++i) host[i] = static_cast<float>(i) * 0.25f - 100.0f;
  float *src = nullptr, *dst = nullptr;
  cudaStream_t stream = nullptr;
  if (cudaMalloc(&src, kCount * sizeof(float)) != cudaSuccess || cudaMalloc(&dst, kCount * sizeof(float)) != cudaSuccess ||
      cudaStreamCreate(&stream) != cudaSuccess) {
    std::printf("FAIL: CUDA allocation\n");
    return 1;
  }
  cudaMemcpy(src, host.data(), kCount * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemset(dst, 0, kCount * sizeof(float));
  ncclGroupStart();
  t.send_activations(0, {src, MemorySpace::Device, stream}, kCount);
  t.recv_activations(0, {dst, MemorySpace::Device, stream}, kCount);
  ncclGroupEnd();
  cudaStreamSynchronize(stream);
  cudaMemcpy(back.data(), dst, kCount * sizeof(float), cudaMemcpyDeviceToHost);
  const bool same = std::memcmp(host.data(), back.data(), kCount * sizeof(float)) == 0;
  std::printf("%s: %zu floats device -> device through ncclSend/ncclRecv on the caller's stream\n",
              same ? "PASS" : "FAIL", kCount);
  cudaFree(src);
  cudaFree(dst);
  cudaStreamDestroy(stream);
  return same ? 0 : 1;
}

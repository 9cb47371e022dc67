// Checking of every CUDA runtime / cuBLAS return code: failures throw pipellm::Error naming the
// call, the source location and the library's own message.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "base/error.h"

namespace pipellm::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  throw Error(std::string("CUDA error: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in " + expr +
              " at " + file + ":" + std::to_string(line));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t s, const char* expr, const char* file, int line) {
  throw Error(std::string("cuBLAS error: ") + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ") in " +
              expr + " at " + file + ":" + std::to_string(line));
}

}  // namespace pipellm::cuda

#define PIPELLM_CUDA_CHECK(expr)                                                             \
  do {                                                                                       \
    const cudaError_t pipellm_cuda_err_ = (expr);                                            \
    if (pipellm_cuda_err_ != cudaSuccess)                                                    \
      ::pipellm::cuda::throw_cuda_error(pipellm_cuda_err_, #expr, __FILE__, __LINE__);       \
  } while (0)

#define PIPELLM_CUBLAS_CHECK(expr)                                                           \
  do {                                                                                       \
    const cublasStatus_t pipellm_cublas_st_ = (expr);                                        \
    if (pipellm_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                         \
      ::pipellm::cuda::throw_cublas_error(pipellm_cublas_st_, #expr, __FILE__, __LINE__);    \
  } while (0)

// After a kernel launch: reports launch-configuration errors with the kernel's name.
#define PIPELLM_CUDA_LAUNCH_CHECK(name) PIPELLM_CUDA_CHECK(cudaPeekAtLastError())

// Host memory for weights the CPU reads and the GPU copies: 2 MiB pages (huge_page_buffer.h: a
// decode token reads scattered pieces), registered with the driver when asked and granted, so
// that copies from it are DMA (and capturable). Registration refused: the memory stays pageable.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "engine/util/huge_page_buffer.h"

namespace pipellm::cuda {

class RegisteredHostBuffer {
 public:
  RegisteredHostBuffer(size_t bytes, bool pin) : mem_(bytes) {
    if (pin) {
      pinned_ = cudaHostRegister(mem_.get(), mem_.bytes(), cudaHostRegisterPortable) == cudaSuccess;
      if (!pinned_) (void)cudaGetLastError();  // not sticky
    }
  }
  ~RegisteredHostBuffer() {
    if (pinned_) cudaHostUnregister(mem_.get());
  }
  RegisteredHostBuffer(const RegisteredHostBuffer&) = delete;
  RegisteredHostBuffer& operator=(const RegisteredHostBuffer&) = delete;

  uint8_t* get() const { return mem_.get(); }
  bool pinned() const { return pinned_; }

 private:
  HugePageBuffer mem_;
  bool pinned_ = false;
};

}  // namespace pipellm::cuda

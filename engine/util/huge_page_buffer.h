// Host memory in 2 MiB pages where the kernel grants them (transparent huge pages asked for with
// madvise; 4 KiB pages otherwise): large read-mostly weights read in scattered pieces (a decode
// token's experts) then cost a TLB miss per 2 MiB instead of per 4 KiB.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pipellm {

class HugePageBuffer {
 public:
  HugePageBuffer() = default;
  // Throws Error naming the size when the memory is not there.
  explicit HugePageBuffer(size_t bytes);
  ~HugePageBuffer();
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;
  HugePageBuffer(HugePageBuffer&& o) noexcept;
  HugePageBuffer& operator=(HugePageBuffer&& o) noexcept;

  uint8_t* get() const { return p_; }
  size_t bytes() const { return n_; }  // the allocation: bytes rounded up to whole 2 MiB pages

 private:
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace pipellm

#include "engine/util/huge_page_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>

#include "base/error.h"

namespace pipellm {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

HugePageBuffer::HugePageBuffer(size_t bytes) : n_((std::max<size_t>(bytes, 1) + kHugePage - 1) / kHugePage * kHugePage) {
  p_ = static_cast<uint8_t*>(std::aligned_alloc(kHugePage, n_));
  if (p_ == nullptr) throw Error("cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  (void)madvise(p_, n_, MADV_HUGEPAGE);  // a hint: refused, the pages stay 4 KiB
}

HugePageBuffer::~HugePageBuffer() { std::free(p_); }

HugePageBuffer::HugePageBuffer(HugePageBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}

HugePageBuffer& HugePageBuffer::operator=(HugePageBuffer&& o) noexcept {
  std::swap(p_, o.p_);
  std::swap(n_, o.n_);
  return *this;
}

}  // namespace pipellm

#include "engine/cuda/weight_streamer.h"

#include <algorithm>
#include <string>

#include "base/error.h"

namespace pipellm::cuda {
namespace {

constexpr size_t kSlotAlign = 256;

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

LayerStreamer::LayerStreamer(std::vector<LayerImage> schedule, const StreamerOptions& opt)
    : schedule_(std::move(schedule)), opt_(opt), fork_(cudaEventDisableTiming), join_(cudaEventDisableTiming),
      sync_(cudaEventDisableTiming) {
  if (opt_.slots < 1) throw InvalidArgument("weight streamer: slots must be >= 1, got " + std::to_string(opt_.slots));
  if (opt_.depth < 0 || opt_.depth > opt_.slots)
    throw InvalidArgument("weight streamer: prefetch depth " + std::to_string(opt_.depth) + " must be in [1, slots = " +
                          std::to_string(opt_.slots) + "] (0: slots)");
  for (const LayerImage& im : schedule_) {
    if (im.host == nullptr || im.bytes == 0) throw InvalidArgument("weight streamer: empty layer image");
    slot_bytes_ = std::max(slot_bytes_, align_up(im.bytes, kSlotAlign));
    bytes_per_pass_ += im.bytes;
  }
  if (schedule_.empty()) return;
  slots_ = std::min(opt_.slots, positions());
  depth_ = std::min(opt_.depth == 0 ? opt_.slots : opt_.depth, slots_);
  ring_.resize(static_cast<size_t>(slots_) * slot_bytes_);
  for (int i = 0; i < slots_; ++i) {
    filled_.emplace_back(cudaEventDisableTiming);
    free_.emplace_back(cudaEventDisableTiming);
  }
}

LayerStreamer::~LayerStreamer() {
  if (copy_.get()) cudaStreamSynchronize(copy_.get());
}

uint8_t* LayerStreamer::slot_data(int p) const {
  check_position(p, "slot_data");
  return ring_.get() + static_cast<size_t>(p % slots_) * slot_bytes_;
}

void LayerStreamer::check_position(int p, const char* what) const {
  if (p < 0 || p >= positions())
    throw InvalidArgument(std::string("weight streamer: ") + what + " of position " + std::to_string(p) +
                          " outside the schedule of " + std::to_string(positions()));
}

void LayerStreamer::enqueue_copy(int p) {
  const int slot = p % slots_;
  // The slot's previous occupant (position p - slots) must be done computing.
  if (p >= slots_) PIPELLM_CUDA_CHECK(cudaStreamWaitEvent(copy_.get(), free_[static_cast<size_t>(slot)].get(), 0));
  const LayerImage& im = schedule_[static_cast<size_t>(p)];
  uint8_t* dst = slot_data(p);
  const size_t chunk = opt_.chunk_bytes == 0 ? im.bytes : opt_.chunk_bytes;
  for (size_t off = 0; off < im.bytes; off += chunk) {
    const size_t n = std::min(chunk, im.bytes - off);
    PIPELLM_CUDA_CHECK(cudaMemcpyAsync(dst + off, im.host + off, n, cudaMemcpyHostToDevice, copy_.get()));
  }
  filled_[static_cast<size_t>(slot)].record(copy_.get());
}

void LayerStreamer::begin_pass(cudaStream_t s) {
  next_copy_ = 0;
  if (schedule_.empty()) return;
  // Fork: the copy stream follows everything enqueued on s so far (and joins s's capture).
  fork_.record(s);
  PIPELLM_CUDA_CHECK(cudaStreamWaitEvent(copy_.get(), fork_.get(), 0));
  if (!opt_.overlap) return;
  while (next_copy_ < std::min(depth_, positions())) enqueue_copy(next_copy_++);
}

void LayerStreamer::before(int p, cudaStream_t s) {
  check_position(p, "before");
  if (!opt_.overlap) {
    if (p != next_copy_) throw InvalidArgument("weight streamer: positions must be visited in schedule order");
    sync_.record(s);
    PIPELLM_CUDA_CHECK(cudaStreamWaitEvent(copy_.get(), sync_.get(), 0));
    enqueue_copy(next_copy_++);
  } else if (p >= next_copy_) {
    throw InvalidArgument("weight streamer: position " + std::to_string(p) + " computed before its copy was enqueued");
  }
  PIPELLM_CUDA_CHECK(cudaStreamWaitEvent(s, filled_[static_cast<size_t>(p % slots_)].get(), 0));
}

void LayerStreamer::after(int p, cudaStream_t s) {
  check_position(p, "after");
  free_[static_cast<size_t>(p % slots_)].record(s);
  // Position p + depth reuses the slot of p + depth - slots <= p, whose compute is now recorded.
  if (opt_.overlap && next_copy_ < positions() && next_copy_ <= p + depth_) enqueue_copy(next_copy_++);
}

void LayerStreamer::end_pass(cudaStream_t s) {
  if (schedule_.empty()) return;
  // Join: s waits for the copy stream (required to end a capture; harmless otherwise).
  join_.record(copy_.get());
  PIPELLM_CUDA_CHECK(cudaStreamWaitEvent(s, join_.get(), 0));
}

MappedHostBuffer::MappedHostBuffer(size_t bytes) {
  if (bytes == 0) return;
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocMapped | cudaHostAllocPortable);
  if (e != cudaSuccess)
    throw Error(std::string("weight streamer: cannot pin ") + std::to_string(bytes) + " bytes of host memory: " +
                cudaGetErrorString(e));
  p_ = static_cast<uint8_t*>(p);
  n_ = bytes;
  void* d = nullptr;
  PIPELLM_CUDA_CHECK(cudaHostGetDevicePointer(&d, p, 0));
  d_ = static_cast<uint8_t*>(d);
}

MappedHostBuffer::~MappedHostBuffer() {
  if (p_) cudaFreeHost(p_);
}

MappedHostBuffer::MappedHostBuffer(MappedHostBuffer&& o) noexcept
    : p_(std::exchange(o.p_, nullptr)), d_(std::exchange(o.d_, nullptr)), n_(std::exchange(o.n_, 0)) {}

MappedHostBuffer& MappedHostBuffer::operator=(MappedHostBuffer&& o) noexcept {
  std::swap(p_, o.p_);
  std::swap(d_, o.d_);
  std::swap(n_, o.n_);
  return *this;
}

}  // namespace pipellm::cuda

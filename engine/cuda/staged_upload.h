// Host-to-device copies of a model's weights through a small ring of pinned staging buffers:
// worker threads copy the next buffer's bytes out of the (mmap'd) file while the DMA engine
// drains the previous one, so a load runs at the slower of memcpy and PCIe instead of their
// sum, with no pageable copies and no per-tensor synchronization.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/util/thread_pool.h"
#include "kernels/cuda/cuda_raii.h"

namespace pipellm::cuda {

struct StagedUploadOptions {
  size_t chunk_bytes = size_t{32} << 20;  // one staging buffer (shrunk to the bytes to move)
  int buffers = 4;                        // staging buffers in the ring
  int threads = 0;                        // host copy threads; 0: min(8, hardware threads)
};

class StagedUploader {
 public:
  // `total_bytes`: about what will be copied (sizes the buffers of a small load).
  StagedUploader(size_t total_bytes, cudaStream_t s, const StagedUploadOptions& opt = {});
  // Waits for the stream: copies in flight still read the staging buffers.
  ~StagedUploader();
  StagedUploader(const StagedUploader&) = delete;
  StagedUploader& operator=(const StagedUploader&) = delete;

  // Copies n bytes from host `src` to device `dst` (both must stay valid until finish()). `then`,
  // if given, is called once the copy is enqueued, to enqueue work on the stream that reads the
  // bytes (stream order: it runs after they have landed).
  void copy(const uint8_t* src, size_t n, uint8_t* dst, std::function<void()> then = {});
  // Issues what is staged and waits for the stream.
  void finish();

  size_t chunk_bytes() const { return chunk_; }

 private:
  struct Piece {
    const uint8_t* src;
    size_t n;
    uint8_t* dst;
    size_t staged_at;  // offset in the current staging buffer
    std::function<void()> then;
  };
  void flush();

  cudaStream_t s_;
  size_t chunk_ = 0;
  ThreadPool pool_;
  std::vector<PinnedBuffer<uint8_t>> bufs_;
  std::vector<Event> drained_;  // recorded after the copies out of buffer i
  std::vector<bool> in_use_;
  size_t cur_ = 0, fill_ = 0;
  std::vector<Piece> pieces_;
};

}  // namespace pipellm::cuda

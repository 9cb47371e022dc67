#include "engine/cuda/staged_upload.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "base/error.h"

namespace pipellm::cuda {
namespace {

int copy_threads(int requested) {
  if (requested > 0) return requested;
  // Copying out of the page cache is bound by page faults and memory bandwidth: a few threads
  // saturate it; more would only compete with the rest of the process.
  return std::min(8, ThreadPool::default_threads());
}

}  // namespace

StagedUploader::StagedUploader(size_t total_bytes, cudaStream_t s, const StagedUploadOptions& opt)
    : s_(s), pool_(copy_threads(opt.threads)) {
  if (opt.chunk_bytes == 0 || opt.buffers < 1)
    throw InvalidArgument("staged upload: chunk_bytes and buffers must be positive (got " +
                          std::to_string(opt.chunk_bytes) + ", " + std::to_string(opt.buffers) + ")");
  chunk_ = std::min(opt.chunk_bytes, std::max<size_t>(total_bytes, 4096));
  // A load that fits one buffer gains nothing from more.
  const size_t n_bufs = std::min<size_t>(static_cast<size_t>(opt.buffers), (total_bytes + chunk_ - 1) / chunk_ + 1);
  for (size_t i = 0; i < n_bufs; ++i) {
    bufs_.emplace_back(chunk_);
    drained_.emplace_back(cudaEventDisableTiming);
  }
  in_use_.assign(n_bufs, false);
}

StagedUploader::~StagedUploader() {
  // Errors are ignored here (destructors never throw); finish() reports them.
  if (!bufs_.empty()) cudaStreamSynchronize(s_);
}

void StagedUploader::copy(const uint8_t* src, size_t n, uint8_t* dst, std::function<void()> then) {
  // A piece never spans two buffers; an empty copy still keeps `then` in order.
  do {
    const size_t k = std::min(n, chunk_ - fill_);
    const bool last = k == n;
    pieces_.push_back({src, k, dst, fill_, last ? std::move(then) : std::function<void()>()});
    fill_ += k;
    src += k;
    dst += k;
    n -= k;
    if (fill_ == chunk_) flush();
  } while (n > 0);
}

void StagedUploader::flush() {
  if (pieces_.empty()) return;
  // The buffer's previous copies (bufs_.size() flushes ago) must have left it.
  if (in_use_[cur_]) drained_[cur_].synchronize();
  uint8_t* stage = bufs_[cur_].get();
  const size_t total = fill_;
  pool_.run([&](int ith, int nth) {
    // Contiguous ranges of the buffer, split at 64 KiB boundaries (few pages touched twice).
    constexpr size_t kAlign = 64 << 10;
    const auto edge = [&](int i) {
      return std::min(total, (total / static_cast<size_t>(nth) * static_cast<size_t>(i) + kAlign - 1) / kAlign * kAlign);
    };
    const size_t lo = edge(ith), hi = ith + 1 == nth ? total : edge(ith + 1);
    for (const Piece& p : pieces_) {
      const size_t a = std::max(lo, p.staged_at), b = std::min(hi, p.staged_at + p.n);
      if (a < b) std::memcpy(stage + a, p.src + (a - p.staged_at), b - a);
    }
  });
  for (Piece& p : pieces_) {
    if (p.n > 0) PIPELLM_CUDA_CHECK(cudaMemcpyAsync(p.dst, stage + p.staged_at, p.n, cudaMemcpyHostToDevice, s_));
    if (p.then) p.then();
  }
  drained_[cur_].record(s_);
  in_use_[cur_] = true;
  cur_ = (cur_ + 1) % bufs_.size();
  fill_ = 0;
  pieces_.clear();
}

void StagedUploader::finish() {
  flush();
  PIPELLM_CUDA_CHECK(cudaStreamSynchronize(s_));
}

}  // namespace pipellm::cuda

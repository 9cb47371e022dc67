// Streams layer images (bytes already in device layout) from pinned host memory into a ring of
// device staging slots, on a dedicated copy stream, overlapped with compute (docs/PREFETCH.md).
//
// A pass visits the streamed layers in a fixed order (the schedule); the layer at position p of
// the schedule always lands in slot p % slots, so device addresses are fixed and a captured
// CUDA graph of a whole pass stays valid. Ordering, all with events:
//   copy of position p done           -> compute of position p may start   (filled[slot])
//   compute of position p - slots done -> copy of position p may overwrite  (free[slot])
// and the copy stream is forked from / joined back into the compute stream at the start / end of
// every pass, so a pass enqueued while the compute stream is capturing becomes one graph with the
// copies as memcpy nodes.
//
// Usage per pass on the compute stream `s`:
//   begin_pass(s); for each position p: { before(p, s); <kernels reading slot_data(p)>; after(p, s); }
//   end_pass(s);
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/cuda_raii.h"

namespace pipellm::cuda {

struct StreamerOptions {
  int slots = 2;            // device staging slots (>= 1; 2 = double buffering)
  int depth = 0;            // positions copied ahead of compute (1..slots; 0: slots)
  size_t chunk_bytes = 0;   // split each layer's copy into pieces of this size (0: one copy)
  bool overlap = true;      // false: ablation, copy a layer only when compute reaches it
};

// One streamed layer: `bytes` at `host` (pinned host memory) in the layout the kernels read.
struct LayerImage {
  const uint8_t* host = nullptr;
  size_t bytes = 0;
};

class LayerStreamer {
 public:
  // `schedule` lists the images in pass order. Allocates slots x (largest image) device bytes.
  LayerStreamer(std::vector<LayerImage> schedule, const StreamerOptions& opt);
  ~LayerStreamer();
  LayerStreamer(const LayerStreamer&) = delete;
  LayerStreamer& operator=(const LayerStreamer&) = delete;

  int positions() const { return static_cast<int>(schedule_.size()); }
  int slots() const { return slots_; }
  size_t slot_bytes() const { return slot_bytes_; }
  // Device address where position p's bytes are during its compute (slot p % slots).
  uint8_t* slot_data(int p) const;
  // Bytes crossing PCIe per pass.
  size_t bytes_per_pass() const { return bytes_per_pass_; }
  const StreamerOptions& options() const { return opt_; }

  void begin_pass(cudaStream_t s);
  void before(int p, cudaStream_t s);
  void after(int p, cudaStream_t s);
  void end_pass(cudaStream_t s);

 private:
  void enqueue_copy(int p);
  void check_position(int p, const char* what) const;

  std::vector<LayerImage> schedule_;
  StreamerOptions opt_;
  int slots_ = 0;
  int depth_ = 0;
  size_t slot_bytes_ = 0;
  size_t bytes_per_pass_ = 0;
  Stream copy_;
  DeviceBuffer<uint8_t> ring_;
  std::vector<Event> filled_, free_;
  Event fork_, join_, sync_;
  int next_copy_ = 0;  // next position to enqueue on the copy stream in this pass
  bool in_pass_ = false;
};

// Pinned, device-mapped host memory (cudaHostAlloc, mapped + portable): the host images of
// streamed layers, and embeddings that kernels read directly over PCIe.
class MappedHostBuffer {
 public:
  MappedHostBuffer() = default;
  explicit MappedHostBuffer(size_t bytes);
  ~MappedHostBuffer();
  MappedHostBuffer(const MappedHostBuffer&) = delete;
  MappedHostBuffer& operator=(const MappedHostBuffer&) = delete;
  MappedHostBuffer(MappedHostBuffer&& o) noexcept;
  MappedHostBuffer& operator=(MappedHostBuffer&& o) noexcept;

  uint8_t* host() const { return p_; }
  const uint8_t* device() const { return d_; }  // the same memory seen from kernels
  size_t bytes() const { return n_; }

 private:
  uint8_t* p_ = nullptr;
  uint8_t* d_ = nullptr;
  size_t n_ = 0;
};

}  // namespace pipellm::cuda

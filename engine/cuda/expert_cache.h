// Hot experts of the host layers kept in spare VRAM (engine/cuda/host_experts.h): a pool of slots,
// each holding one expert of one host layer (every stack of it: gate, up or [gate; up], down, in
// device layout), and per host layer a device table expert -> slot (-1: not cached). A decode
// step splits the routed pairs on the device (kernels/cuda/moe_cache.h): cached pairs multiply on
// the GPU, the others go to the CPU as before. Between steps, every refresh_steps steps, the
// experts chosen most (counts halved at each refresh, so recent use weighs more) move into the
// slots of the least used, copied from the host images (repacked on the device where the type
// needs it). The tables and pools are device memory read at run time: captured decode graphs
// stay valid while the cache changes.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "engine/cuda/cuda_weights.h"
#include "kernels/cuda/cuda_raii.h"

namespace pipellm::cuda {

class ExpertCache {
 public:
  // One expert stack of a host layer: the device shape of one expert, the bytes of one expert in
  // the host image, and where expert 0's bytes are there (the file's blocks).
  struct Stack {
    LayerTensor role = LayerTensor::Count;
    DeviceMatrix shape;
    uint64_t expert_bytes = 0;
    const uint8_t* host = nullptr;
  };
  struct Layer {
    std::vector<Stack> stacks;  // empty: not a host layer
    int n_expert = 0;
  };
  // `bytes` of device memory in slots of one expert of every role (each role's slot the size of
  // its largest expert over the layers). Slot 0 stays zeros (what uncached pairs multiply), so
  // slots() - 1 experts fit; fewer than two slots: slots() == 0, and nothing is cached.
  ExpertCache(std::vector<Layer> layers, uint64_t bytes, int refresh_steps = 32);

  int slots() const { return n_slots_; }
  uint64_t device_bytes() const;
  // Device table of a host layer: [n_expert] slot or -1.
  const int32_t* slot_table(int local_layer) const { return tables_[static_cast<size_t>(local_layer)].get(); }
  // The layer's cached experts as expert stacks indexed by slot (only the expert roles set).
  const CudaLayer& matrices(int local_layer);

  // From a host function: a step's routed ids of real rows (n_pairs of them) and the host's share
  // (-1 where the cache served the pair). Thread-safe.
  void record(int local_layer, const int32_t* ids, const int32_t* host_ids, int n_pairs);
  // Before a step, on its stream: every refresh_steps calls, the most used experts move in.
  void maintain(cudaStream_t s);
  // Pairs the cache served, of all pairs recorded, since the stage was built.
  uint64_t hits() const;
  uint64_t pairs() const;
  int cached() const;  // slots holding an expert

 private:
  struct Owner {
    int layer = -1, expert = -1;
  };
  void fill(int slot, Owner o, cudaStream_t s);

  std::vector<Layer> layers_;
  int refresh_steps_ = 32;
  int n_slots_ = 0;
  int steps_ = 0;
  std::vector<LayerTensor> roles_;        // roles with a pool
  std::vector<uint64_t> stride_;          // per role: bytes per slot
  std::vector<DeviceBuffer<uint8_t>> pools_;
  DeviceBuffer<uint8_t> raw_;             // one expert's raw blocks before a repack
  std::vector<DeviceBuffer<int32_t>> tables_;
  std::vector<std::vector<int32_t>> slot_of_;  // host mirrors of the tables
  std::vector<Owner> owner_;                   // per slot
  std::vector<std::vector<float>> score_;      // per layer and expert: decayed choice counts
  CudaLayer staged_;
  mutable std::mutex mutex_;                   // counts below, written by host functions
  std::vector<std::vector<uint32_t>> recent_;
  uint64_t hits_ = 0, pairs_ = 0;
};

}  // namespace pipellm::cuda

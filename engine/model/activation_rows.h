// Activation rows as they pass between pipeline stages: where they live, and on which stream.
#pragma once

namespace pipellm {

// Where activation buffers live; GPU transports take device pointers.
enum class MemorySpace { Host, Device };

// A stage's activation rows [n_tokens][n_embd] f32 and where they are. `stream` is the stage's
// cudaStream_t (opaque here) for device rows: transports order their copies on it.
struct ActivationRows {
  float* data = nullptr;
  MemorySpace space = MemorySpace::Host;
  void* stream = nullptr;
};

}  // namespace pipellm

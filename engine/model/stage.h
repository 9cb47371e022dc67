// A pipeline stage: some layers of a model, optionally with the embeddings (head) and the
// output head (tail). One stage that has all three is a whole model. Backends (CpuStage,
// the CUDA stage) implement this; the generation loop and the pipeline runtime use only it.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/model/batch.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"

namespace pipellm {

class Stage {
 public:
  virtual ~Stage() = default;
  virtual const ModelConfig& config() const = 0;
  virtual LayerRange range() const = 0;
  virtual bool is_first() const = 0;  // embeds tokens
  virtual bool is_last() const = 0;   // produces logits
  virtual int n_ctx() const = 0;      // positions per KV slot
  virtual int n_slots() const = 0;

  // Runs the batch through this stage. `out` becomes [n_outputs][n_vocab] logits on the last
  // stage, else [n_tokens][n_embd] activations for the next stage. Throws InvalidArgument for
  // a malformed batch (token id out of range, position beyond n_ctx, bad slot).
  virtual void forward(const Batch& batch, std::vector<float>& out) = 0;

  // GPU memory in use for /metrics; 0 for stages on the host.
  virtual uint64_t device_memory_bytes() const { return 0; }
};

}  // namespace pipellm

// A pipeline stage: some layers of a model, optionally with the embeddings (head) and the
// output head (tail). One stage that has all three is a whole model. Backends (CpuStage,
// CudaStage) implement this; the generation runtime (engine/pipeline/stage_runner) uses only it.
//
// Two entry points over the same layers:
// - step(): the runtime's seam. Inputs stay where they live: token ids (first stage) or the
//   activation rows the transport wrote into input_rows() (device memory on a GPU). Outputs stay
//   there too: output_rows() for the next stage, or, on the tail, one sampled token per logits
//   row (sampled where the logits are: on the GPU for CUDA stages). Only ids reach the host.
// - forward(): the same pass with host activations in and host logits out (eval, tests, benches).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/model/activation_rows.h"
#include "engine/model/batch.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"
#include "engine/runtime/sampling_spec.h"

namespace pipellm {

// What step() produced on the tail: one id per logits row, in batch order, with its
// log-probability where the sequence asked (SamplingSpec::logprobs); the rows' logits (before
// penalties) when the caller asked for them.
struct StepOutput {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // per row when any row's sequence asked for them (NaN for others), else empty
  // Per row when any row's sequence asked for alternatives (SamplingSpec::top_logprobs; empty
  // lists for the others), else empty. From the host Sampler (a CUDA tail samples such sequences
  // on the host).
  std::vector<std::vector<TokenLogprob>> top_logprobs;
  std::vector<float> logits;  // [rows][n_vocab] when want_logits
};

class Stage {
 public:
  virtual ~Stage() = default;
  virtual const ModelConfig& config() const = 0;
  virtual LayerRange range() const = 0;
  virtual bool is_first() const = 0;  // embeds tokens
  virtual bool is_last() const = 0;   // produces logits
  virtual int n_ctx() const = 0;      // positions per KV slot
  virtual int n_slots() const = 0;
  // The most tokens one step() takes (the scheduler's batch budget must not exceed it).
  virtual int max_step_tokens() const = 0;

  // Runs the batch through this stage. `out` becomes [n_outputs][n_vocab] logits on the last
  // stage, else [n_tokens][n_embd] activations for the next stage. Throws InvalidArgument for
  // a malformed batch (token id out of range, position beyond n_ctx, bad slot).
  virtual void forward(const Batch& batch, std::vector<float>& out) = 0;

  // Tail: a sequence starts in `slot` with these settings (seeds its random stream; its penalty
  // window is the slot's tokens from position 0, recorded as they pass through step()).
  // `history`: the last tokens of a cached prefix the sequence reuses without feeding them
  // (scheduler.h), oldest first, for that window. Throws InvalidArgument for a bad slot or bad
  // settings.
  virtual void start_sequence(int slot, const SamplingSpec& sampling, const std::vector<int32_t>& history) = 0;
  // Non-first stages: where the transport writes the step's n_tokens input rows.
  virtual ActivationRows input_rows(int n_tokens) = 0;
  // One micro-step. `batch.tokens` is given on every stage (the tail records them for its
  // penalties); non-first stages read their rows from input_rows(). Non-last stages leave
  // [n_tokens][n_embd] rows in output_rows() (valid until the next step); the tail fills `out`.
  // Throws InvalidArgument for a malformed batch or one over max_step_tokens().
  virtual void step(const Batch& batch, StepOutput& out, bool want_logits = false) = 0;
  virtual ActivationRows output_rows() = 0;
  // Host staging for transports that only move host memory (device stages only).
  virtual void rows_to_host(const ActivationRows& rows, float* host, size_t count);
  virtual void rows_from_host(const float* host, const ActivationRows& rows, size_t count);

  // GPU memory in use for /metrics; 0 for stages on the host.
  virtual uint64_t device_memory_bytes() const { return 0; }
};

}  // namespace pipellm

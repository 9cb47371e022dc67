// The step seam (Stage::step) for stages whose forward() works in host memory: the CPU backend
// and test doubles. Rows in and out are host buffers; the tail samples with SlotSamplers.
#pragma once
#include <memory>
#include <vector>

#include "engine/model/stage.h"
#include "engine/runtime/slot_samplers.h"

namespace pipellm {

class HostStage : public Stage {
 public:
  int max_step_tokens() const override { return 1 << 20; }
  void start_sequence(int slot, const SamplingSpec& sampling, const std::vector<int32_t>& history) override;
  ActivationRows input_rows(int n_tokens) override;
  void step(const Batch& batch, StepOutput& out, bool want_logits) override;
  ActivationRows output_rows() override { return {out_.data(), MemorySpace::Host, nullptr}; }

 private:
  SlotSamplers& samplers();
  std::unique_ptr<SlotSamplers> samplers_;  // made on first use (the config is known then)
  std::vector<float> in_, out_;             // input rows; output rows or logits
  Batch batch_;                             // step()'s batch with `hidden` set
};

}  // namespace pipellm

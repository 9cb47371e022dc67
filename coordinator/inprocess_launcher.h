// The head as a thread of the coordinator: one whole-model stage (CPU, or a GPU with
// --device cuda[:N]) serving the link through the same runtime as the stage worker
// (StageRunner with one rank, engine/link serve_link). For single-GPU serving without MPI.
#pragma once
#include <memory>
#include <string>

#include "coordinator/head_launcher.h"
#include "engine/cpu/cpu_model.h"
#include "engine/devices/device_stage.h"
#include "engine/gguf/gguf_file.h"
#include "engine/link/serve_link.h"
#include "engine/pipeline/scheduler.h"

namespace pipellm::coord {

struct InProcessOptions {
  CpuModelOptions cpu;         // the file, threads, context, sequences, KV type
  std::string device = "cpu";  // or cuda[:N]: the stage runs there
  bool graphs = true;
  int gpu_layers = -1;         // -ngl N: layers resident on the GPU, the rest streamed (-1: all)
  ExpertPlacementFlags experts;  // CUDA: routed experts in host memory (--cpu-moe, --n-cpu-moe, -ot)
  double cpu_rows = 0.0;         // CUDA: --cpu-rows
  int max_batch_tokens = 512;
  int prefill_chunk = 256;
  int debug_step_delay_ms = 0;  // tests: the head sleeps this long per step
};

class InProcessLauncher : public HeadLauncher {
 public:
  // Opens the model now, on its device (throws Error naming the file, InvalidArgument for a
  // bad device).
  InProcessLauncher(const std::string& model_path, const InProcessOptions& opt);
  ~InProcessLauncher() override;
  std::unique_ptr<HeadProcess> launch(const std::string& coordinator_address, const std::string& secret) override;
  std::string describe() const override { return "in-process engine on " + opt_.device; }

 private:
  std::string model_name_;
  InProcessOptions opt_;
  std::unique_ptr<CpuModel> cpu_;  // device cpu
  std::unique_ptr<Stage> gpu_;     // device cuda[:N] (no CPU stage, no host KV cache)
  link::GrammarSupport grammar_;   // the tail's token texts for grammars, or why they are refused
};

}  // namespace pipellm::coord

// `pipellm plan --config X.yaml`: the layer partition a stage config gives (ranges, bytes read
// per token, KV cache, headroom per stage) and what each kind of layer keeps per sequence (KV
// rows of full and sliding layers, recurrent state, KV-sharing layers), or the reason no
// partition fits (exit 1).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"
#include "engine/pipeline/partition_planner.h"
#include "engine/pipeline/pipeline_config.h"
#include "engine/pipeline/plan_check.h"
#include "flags/llama_flags.h"

namespace pipellm::cli {

int cmd_plan(int argc, char** argv) {
  std::string config, model;
  CLI::App app{"pipellm plan: prints the partition of the model's layers over the config's stages: layer ranges, "
               "bytes read per token (the time model), weights, KV cache, scratch, budget and headroom; then the KV "
               "cache and recurrent state per sequence of each kind of layer (full attention, sliding-window ring, "
               "recurrent, KV-sharing).",
               "pipellm plan"};
  app.add_option("--config", config, "the stage config (YAML), as pipellm-stage --config takes")
      ->type_name("FILE")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("-m,--model", model, "use this GGUF instead of the config's model")->type_name("FILE");
  if (auto code = flags::parse(app, argc, argv)) return *code;
  PipelineConfig c;
  try {
    c = PipelineConfig::load(config);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "pipellm plan: error: %s\n", e.what());
    return 2;
  }
  if (!model.empty()) c.model = model;
  const auto f = GgufFile::open(c.model);
  const ModelConfig mc = ModelConfig::from_gguf(*f);
  std::printf("model:     %s\n           %s\n", c.model.c_str(), mc.summary().c_str());
  std::printf("pipeline:  %d stage%s, %d micro-batches, context %d x %d sequences, KV %s, transport %s\n",
              c.n_stages(), c.n_stages() == 1 ? "" : "s", c.micro_batches, c.context_length, c.max_sequences,
              kv_type_name(c.kv_cache_type), transport_name(c.transport));
  try {
    const ModelSizes sizes = ModelSizes::from_gguf(*f, mc, c);
    const PlanInput in = PlanInput::from_config(c, mc);
    const PartitionPlan p = plan_partition(sizes, in);
    // And what the coordinator would refuse besides (stages past this machine's memory or GPUs).
    check_stage_plan(c, *f, 0, physical_memory_bytes(), visible_gpu_count());
    std::printf("%s", format_plan(p).c_str());
    std::printf("%s", format_layer_memory(sizes, in).c_str());
    for (size_t s = 0; s < p.stages.size(); ++s) {
      const StageSpec& spec = c.stages[s];
      std::printf("rank %zu: %s%s%s\n", s, spec.device.c_str(), spec.host.empty() ? "" : " on ", spec.host.c_str());
    }
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "pipellm plan: %s: %s\n", config.c_str(), e.what());
    return 1;
  }
  return 0;
}

}  // namespace pipellm::cli

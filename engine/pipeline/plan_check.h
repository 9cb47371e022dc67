// What a config must pass before anything runs it (issue 21 item 10), checked by the coordinator
// before it launches the stages and by `pipellm plan`: the planner's partition (the same planner
// the stages run), refused with its message when the plan fails: more stages than layers, explicit layers past
// the end, a model architecture the engine cannot run, an MPI rank count that is not the config's
// stage count, a cuda:N this machine does not have, or a stage (or the in-process engine) whose
// weights and KV cache exceed this machine's memory (which used to end in a bare std::bad_alloc).
// Stages placed on other hosts (`host:`) are checked for their plan only.
#pragma once
#include <cstdint>
#include <string>

#include "engine/gguf/gguf_file.h"
#include "engine/pipeline/partition_planner.h"
#include "engine/pipeline/pipeline_config.h"

namespace pipellm {

// Bytes of memory this machine has (sysconf), 0 when unknown.
uint64_t physical_memory_bytes();
// GPUs a process here can use: $CUDA_VISIBLE_DEVICES when set, else /proc/driver/nvidia/gpus;
// 0 when there is no NVIDIA driver.
int visible_gpu_count();

// The plan of `cfg` over `n_ranks` MPI ranks (0: one per stage); throws ConfigError naming the
// config with the reason it cannot run. `local_memory` / `local_gpus`: this machine's (the
// functions above; tests pass their own).
PartitionPlan check_stage_plan(const PipelineConfig& cfg, const GgufFile& model, int n_ranks, uint64_t local_memory,
                               int local_gpus);

// The in-process engine: the whole model with an n_ctx x n_slots KV cache on `device`; throws
// InvalidArgument naming --ctx / --slots when it cannot fit `local_memory` (CPU: the weights are
// mapped, so only the KV cache and scratch count).
void check_inprocess_fit(const GgufFile& model, int n_ctx, int n_slots, KvType kv, const std::string& device,
                         uint64_t local_memory, int local_gpus);

}  // namespace pipellm

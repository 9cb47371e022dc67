// The layer partition: which contiguous layers each pipeline stage holds.
//
// Per-stage time is modelled as bytes of weights read per decoded token (decode is memory-bound):
// the stage's layers, plus one embedding row on the first stage and the output head on the last.
// Memory of a stage = its weights (the whole token_embd on the first stage, output_norm + output
// on the last; a tied output counts token_embd again on the last stage unless it is also the
// first) + its layers' KV cache at the configured context and sequence count + a scratch reserve.
//
// The planner minimises the slowest stage's time subject to every stage fitting its budget and
// holding at least one layer; among splits with the same slowest stage it minimises the sum of
// squared stage times (the most even one); remaining ties go to the split that puts layers
// earlier. An explicit split (config `layers:`) is checked against the budgets instead.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/pipeline/pipeline_config.h"

namespace pipellm {

class GgufFile;
struct ModelConfig;

struct ModelSizes {
  std::vector<uint64_t> layer_bytes;  // weight bytes of each layer (resident)
  std::vector<uint64_t> layer_read_bytes;  // of them read per token (MoE: the used experts only)
  std::vector<int> layer_window;      // sliding window of each layer (0: keeps the whole context)
  uint64_t embd_bytes = 0;            // token_embd, whole tensor
  uint64_t embd_row_bytes = 0;        // one row of it (read per token)
  uint64_t output_bytes = 0;          // output_norm + output (token_embd when tied)
  uint64_t kv_bytes_per_token = 0;    // K + V of one layer for one position (the largest layer)
  std::vector<uint64_t> layer_kv_bytes_per_token;  // per layer (0: a recurrent layer)
  std::vector<uint64_t> layer_state_bytes;         // per layer and sequence: a recurrent state
  std::vector<int> layer_kv_source;  // per layer: the layer whose KV cache it reads (-1: its own)
  std::vector<uint64_t> layer_expert_bytes;  // per layer: its routed expert matrices (a stage may keep them on its host)
  bool tied_output = false;           // output_bytes includes token_embd (shared with stage 0 if one)

  int n_layer() const { return static_cast<int>(layer_bytes.size()); }
  // K and V caches of one type, of their own types, or as a pipeline config gives them.
  static ModelSizes from_gguf(const GgufFile& f, const ModelConfig& c, KvType kv);
  static ModelSizes from_gguf(const GgufFile& f, const ModelConfig& c, KvType k, KvType v);
  static ModelSizes from_gguf(const GgufFile& f, const ModelConfig& c, const PipelineConfig& p);
};

struct PlanInput {
  int n_stages = 1;
  std::vector<uint64_t> budgets;  // per stage; 0 = unlimited
  uint64_t kv_positions = 0;      // context_length * max_sequences
  int context_length = 0;         // with max_sequences, sizes the sliding-window layers' rings
  int max_sequences = 0;
  int step_tokens = 512;          // tokens per step (the stages' default max batch)
  uint64_t scratch_bytes = 0;     // reserve per stage
  std::vector<std::pair<int, int>> explicit_layers;  // empty: plan automatically
  // Per stage and global layer: the routed experts stay in that stage's host memory (cpu_moe,
  // n_cpu_moe, override_tensor), so its budget does not hold them; empty: none.
  std::vector<std::vector<bool>> host_experts;

  // Throws InvalidArgument for an expert placement the model's tensors do not allow.
  static PlanInput from_config(const PipelineConfig& c, const ModelConfig& m);
};

struct StagePlan {
  int first = 0, last = 0;      // layers [first, last)
  bool has_embeddings = false;  // first stage
  bool has_output = false;      // last stage
  uint64_t weight_bytes = 0;    // resident weights
  uint64_t read_bytes = 0;      // per decoded token (the time model)
  uint64_t kv_bytes = 0;
  uint64_t scratch_bytes = 0;
  uint64_t budget = 0;          // 0 = unlimited
  uint64_t total() const { return weight_bytes + kv_bytes + scratch_bytes; }
  int64_t headroom() const { return static_cast<int64_t>(budget) - static_cast<int64_t>(total()); }
};

struct PartitionPlan {
  std::vector<StagePlan> stages;
  bool explicit_split = false;
  uint64_t bottleneck() const;  // max read_bytes
  double balance() const;       // mean / max of read_bytes (1.0 = perfect)
};

// Throws InvalidArgument with the reason when no split fits (or the explicit one does not).
PartitionPlan plan_partition(const ModelSizes& m, const PlanInput& in);

// Multi-line table for `pipellm plan` and the stage worker's log.
std::string format_plan(const PartitionPlan& p);

// What each kind of layer keeps per sequence, for `pipellm plan`: full-attention layers K and V
// for every position of the context, sliding-window layers a ring of window + step - 1 positions,
// recurrent (DeltaNet) layers a fixed state, KV-sharing layers nothing of their own (they read
// an earlier layer's cache).
enum class LayerKind { Full, Sliding, Recurrent, Shared };
const char* layer_kind_name(LayerKind k);  // "full", "sliding ring", "recurrent", "shared"
LayerKind layer_kind(const ModelSizes& m, int layer);

struct LayerKindMemory {
  LayerKind kind = LayerKind::Full;
  int layers = 0;
  uint64_t kv_bytes_per_token = 0;  // K + V of one position, all of the kind's layers
  int rows_per_sequence = 0;        // positions each layer keeps per sequence (-1: they differ)
  uint64_t bytes_per_sequence = 0;  // KV rows or recurrent state, all of the kind's layers
  uint64_t bytes = 0;               // for in.max_sequences sequences
  std::vector<int> sources;         // shared: the layers whose caches they read
};

// One entry per kind the model has, in the order full, sliding, recurrent, shared.
std::vector<LayerKindMemory> layer_memory_by_kind(const ModelSizes& m, const PlanInput& in);
// Their table and the recurrent state per sequence, with exact byte counts.
std::string format_layer_memory(const ModelSizes& m, const PlanInput& in);

}  // namespace pipellm

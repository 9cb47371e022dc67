// VRAM planning for weight streaming (docs/PREFETCH.md): given what a stage must hold on the
// GPU and a device-memory budget, decides which layers stay resident and which are streamed
// from pinned host memory through a ring of device staging slots each pass.
//
// Accounting: budget >= resident matrices + 1-D tensors (norms, biases) + output head +
// embeddings (unless looked up from host memory) + staging ring + KV cache + `other_bytes`.
// Activations and library workspaces are the caller's to count (in other_bytes) or to leave out.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"

namespace pipellm {

// Every matrix inside a staging slot (and inside the pinned host image of a layer) starts at a
// multiple of this many bytes.
constexpr uint64_t kStreamAlign = 256;

// "2GiB", "1500MB", "1.5 GiB", "4096" (bytes), case-insensitive. KB/MB/GB/TB are powers of 1000;
// KiB/MiB/GiB/TiB and the bare K/M/G/T are powers of 1024. Throws InvalidArgument naming `what`.
uint64_t parse_byte_size(const std::string& text, const std::string& what = "--vram-budget");
// "1.50 GiB" style, for messages.
std::string format_bytes(uint64_t bytes);

enum class StreamPlacement {
  Interleaved,    // streamed layers spread evenly between resident ones (default, see docs)
  ResidentFirst,  // the first layers resident, the last ones streamed
};

struct VramPlanInput {
  std::vector<uint64_t> layer_bytes;  // matrices of each local layer, slot layout (aligned)
  uint64_t layer_fixed_bytes = 0;     // 1-D tensors of all local layers: always resident
  uint64_t embeddings_bytes = 0;      // token_embd, 0 when the stage has none
  uint64_t output_bytes = 0;          // output head + final norm, 0 when the stage has none
  bool output_is_embeddings = false;  // tied head: the embedding must then be resident
  uint64_t kv_bytes = 0;
  uint64_t other_bytes = 0;
  uint64_t budget = 0;  // 0: no limit (everything resident)
  int slots = 2;        // staging slots (>= 2)
  StreamPlacement placement = StreamPlacement::Interleaved;
  bool embeddings_in_host = true;  // when streaming: look embedding rows up from pinned host memory
  int min_streamed = 0;            // stream at least this many layers even if more would fit (tests, ablations)
};

struct VramPlan {
  std::vector<bool> streamed;  // per local layer
  bool embeddings_in_host = false;
  int slots = 0;                    // ring slots actually used (0: nothing streamed)
  uint64_t slot_bytes = 0;          // largest layer
  uint64_t ring_bytes = 0;          // slots * slot_bytes
  uint64_t resident_weight_bytes = 0;  // weights on the device (layers, 1-D, head, embeddings)
  uint64_t streamed_bytes = 0;      // bytes crossing PCIe each pass
  uint64_t host_pinned_bytes = 0;   // pinned host memory: streamed layers (+ embeddings)
  uint64_t device_bytes = 0;        // everything accounted on the device
  uint64_t minimum_budget = 0;      // smallest budget that would have worked (with streaming)

  int n_streamed() const;
  int n_resident() const { return static_cast<int>(streamed.size()) - n_streamed(); }
  // "layers resident 14/32 (R R S ...), streamed 2.60 GiB/pass, ring 2 x 130 MiB, ..."
  std::string summary() const;
};

// Streams as few layers as fit (at least in.min_streamed). Throws InvalidArgument stating the minimum budget (and its parts) when even the ring, the KV
// cache and the parts that must stay resident do not fit.
VramPlan plan_vram(const VramPlanInput& in);

// Bytes of one layer's matrices laid out in a staging slot (each matrix aligned to kStreamAlign).
uint64_t layer_stream_bytes(const LayerWeights& l);
// Bytes of one layer's 1-D tensors as the device holds them (f32).
uint64_t layer_fixed_bytes(const LayerWeights& l);

// The planner's input for a stage holding `w`, with a KV cache of n_slots x n_ctx whose K and V
// rows are of k_type / v_type (f16 by default; engine/model/kv_cache.h: kv_row_bytes).
// KV sizes per layer as the stage keeps them (ModelConfig::kv_rows with steps of max_step tokens).
VramPlanInput vram_plan_input(const ModelConfig& c, const ModelWeights& w, int n_slots, int n_ctx, uint64_t budget,
                              int max_step = 512, TensorType k_type = TensorType::F16,
                              TensorType v_type = TensorType::F16);

}  // namespace pipellm

#include "engine/model/vram_fit.h"

#include <algorithm>

#include "base/error.h"

namespace pipellm {
namespace {

std::string exact(uint64_t b) { return format_bytes(b) + " (" + std::to_string(b) + " bytes)"; }

std::string free_text(const VramFitInput& in) {
  return "the device has " + exact(in.free_bytes) + " free, of which " + format_bytes(in.margin_bytes) +
         " stays free as a margin";
}

// The parts that stay on the device however many layers stream (plan_vram's minimum), named.
std::string fixed_parts(const VramFitInput& in) {
  const VramPlanInput& s = in.sizes;
  uint64_t largest = 0;
  for (uint64_t b : s.layer_bytes) largest = std::max(largest, b);
  const int slots = std::min(std::max(s.slots, 2), std::max(static_cast<int>(s.layer_bytes.size()), 1));
  std::string out = "KV cache " + format_bytes(s.kv_bytes) + ", scratch " + format_bytes(in.scratch_bytes) +
                    ", staging ring " + std::to_string(slots) + " x " + format_bytes(largest);
  if (s.output_bytes > 0) out += ", output head " + format_bytes(s.output_bytes);
  out += ", norms/biases " + format_bytes(s.layer_fixed_bytes);
  const bool emb_dev = s.output_is_embeddings || !s.embeddings_in_host;
  if (emb_dev && s.embeddings_bytes > 0) out += ", embeddings " + format_bytes(s.embeddings_bytes);
  if (s.other_bytes > 0) out += ", other " + format_bytes(s.other_bytes);
  return out;
}

}  // namespace

uint64_t fit_margin(uint64_t free_bytes) { return std::max<uint64_t>(uint64_t{512} << 20, free_bytes / 50); }

VramFit fit_vram(const VramFitInput& in) {
  const int n = static_cast<int>(in.sizes.layer_bytes.size());
  VramFit f;
  f.usable_bytes = in.free_bytes > in.margin_bytes ? in.free_bytes - in.margin_bytes : 0;
  VramPlanInput p = in.sizes;
  p.budget = 0;
  p.min_streamed = 0;

  if (in.user_budget > 0 || in.gpu_layers >= 0 || in.min_streamed > 0) {
    // The user decided: plan exactly that (plan_vram's own error when the budget is too small),
    // and only warn when it will not fit, since the free figure may be stale by the time it loads.
    f.mode = VramFitMode::UserChoice;
    f.budget = in.user_budget;
    f.min_streamed = in.min_streamed;
    if (in.gpu_layers >= 0 && in.gpu_layers < n) f.min_streamed = std::max(f.min_streamed, n - in.gpu_layers);
    p.budget = f.budget;
    p.min_streamed = f.min_streamed;
    f.plan = plan_vram(p);
    f.needed_bytes = f.plan.device_bytes + in.scratch_bytes;
    if (f.needed_bytes > in.free_bytes) {
      f.message = "warning: this stage needs about " + exact(f.needed_bytes) + " (weights, KV cache and ring " +
                  format_bytes(f.plan.device_bytes) + ", scratch " + format_bytes(in.scratch_bytes) + ") but " +
                  free_text(in) + "; expect an out-of-memory error (leave out " + in.override_hint +
                  " to fit automatically)";
    }
    return f;
  }

  f.plan = plan_vram(p);  // everything resident
  f.needed_bytes = f.plan.device_bytes + in.scratch_bytes;
  if (f.needed_bytes <= f.usable_bytes) return f;

  // minimum_budget is the whole stage when streaming would not make it smaller.
  const uint64_t minimum = f.plan.minimum_budget + in.scratch_bytes;
  if (minimum > f.usable_bytes) {
    throw InvalidArgument("CUDA stage does not fit on the device: even with every layer streamed it needs " +
                          exact(minimum) + " (" + fixed_parts(in) + ") but " + free_text(in) + "; reduce " +
                          in.reduce_hint);
  }
  if (!in.expert_bytes.empty()) {
    // The fewest leading layers whose experts, left in host memory, let the rest fit.
    VramPlanInput h = p;
    uint64_t moved = 0;
    for (int k = 0; k < n && k < static_cast<int>(in.expert_bytes.size()); ++k) {
      const uint64_t b = std::min(in.expert_bytes[static_cast<size_t>(k)], h.layer_bytes[static_cast<size_t>(k)]);
      h.layer_bytes[static_cast<size_t>(k)] -= b;
      moved += b;
      if (b == 0) continue;
      const VramPlan plan = plan_vram(h);
      const uint64_t needed = plan.device_bytes + in.scratch_bytes + in.expert_slot_bytes;
      if (needed > f.usable_bytes) continue;
      const uint64_t whole = f.needed_bytes;
      f.mode = VramFitMode::AutoStreamed;
      f.host_expert_layers = k + 1;
      f.plan = plan;
      // What is left keeps the most used of the moved experts on the device (at most all of them).
      f.expert_cache_bytes = std::min(f.usable_bytes - needed, moved);
      f.needed_bytes = needed + f.expert_cache_bytes;
      f.message = "auto-fit: the routed experts of layers 0-" + std::to_string(k) + " (" + format_bytes(moved) +
                  ") stay in host memory, multiplied by the CPU, the most used of them in a " +
                  format_bytes(f.expert_cache_bytes) + " cache (all on the GPU would need " + format_bytes(whole) +
                  ", " + format_bytes(in.free_bytes) + " free); give --n-cpu-moe, --cpu-moe or -ot to override";
      return f;
    }
  }
  if (!in.layers_streamable) {
    throw InvalidArgument("CUDA stage does not fit on the device: it needs " + exact(f.needed_bytes) + " (weights " +
                          format_bytes(f.plan.resident_weight_bytes) + ", KV cache " + format_bytes(in.sizes.kv_bytes) +
                          ", scratch " + format_bytes(in.scratch_bytes) + ") but " + free_text(in) +
                          (in.expert_bytes.empty() ? "" : ", even with every routed expert in host memory") +
                          ", and layers with experts cannot be streamed yet; reduce " + in.reduce_hint +
                          ", or split the model over more GPUs");
  }
  const uint64_t whole = f.needed_bytes;
  f.mode = VramFitMode::AutoStreamed;
  f.budget = f.usable_bytes - in.scratch_bytes;
  p.budget = f.budget;
  f.plan = plan_vram(p);
  f.needed_bytes = f.plan.device_bytes + in.scratch_bytes;
  f.message = "auto-fit: " + std::to_string(f.plan.n_resident()) + " of " + std::to_string(n) + " layers resident, " +
              std::to_string(f.plan.n_streamed()) + " streamed, budget " + format_bytes(f.budget) +
              " (all resident would need " + format_bytes(whole) + ", " + format_bytes(in.free_bytes) +
              " free); give " + in.override_hint + " to override";
  return f;
}

}  // namespace pipellm

#include "engine/cuda/stage_fit.h"

#include <algorithm>

#include "engine/cuda/host_experts.h"

namespace pipellm::cuda {
namespace {

uint64_t elems(const TensorView* t, int64_t n_expert = 1) {
  return t == nullptr ? 0 : static_cast<uint64_t>(t->ne[0]) * static_cast<uint64_t>(t->n_rows() / n_expert);
}

// The largest matrix CudaWeights records (max_matrix_elems) and the f16 copies resident_f16 keeps.
void matrix_sizes(const ModelConfig& c, const ModelWeights& w, uint64_t& largest, uint64_t& f16_elems) {
  largest = 0;
  f16_elems = 0;
  const auto add = [&](const TensorView* t, bool f16) {
    largest = std::max(largest, elems(t));
    if (f16) f16_elems += elems(t);
  };
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerSpec& spec = c.layer(w.range.first + static_cast<int>(i));
    for (LayerTensor r : all_layer_tensors()) {
      if (!is_matrix(r)) continue;
      // Expert stacks keep no f16 copy and need no dequantization scratch.
      if (is_expert_stack(r) && spec.n_expert != 1) continue;
      add(w.layers[i][r], true);
    }
  }
  add(w.token_embd, false);
  add(w.output, true);  // with resident_f16 even a tied head gets its own copy
  add(w.per_layer_token_embd, false);
  add(w.per_layer_model_proj, true);
}

}  // namespace

uint64_t estimate_scratch_bytes(const ModelConfig& c, const ModelWeights& w, bool last, const CudaStageOptions& opt,
                                int sms) {
  const LayerRange range = w.range;
  const int max_tokens = std::max(opt.max_batch_tokens, CudaStage::batch_bucket(opt.n_slots));
  const uint64_t T = static_cast<uint64_t>(max_tokens), S = static_cast<uint64_t>(opt.n_slots);
  const uint64_t E = c.n_embd, F = c.n_ff, Q = c.q_dim(), K = c.k_dim();
  uint64_t W = std::max({E, F, Q}), fused_row = 0, delta_vs = 0, delta_heads = 0;
  bool gated_q = false;
  for (int il = range.first; il < range.last; ++il) {
    const LayerSpec& l = c.layer(il);
    if (l.qkv_fused) fused_row = std::max(fused_row, Q + 2 * K);
    if (l.gated_q) fused_row = std::max(fused_row, 2 * Q);
    gated_q = gated_q || l.gated_q;
    if (l.mixer == Mixer::DeltaNet) {
      fused_row = std::max(fused_row, static_cast<uint64_t>(l.delta.channels()));
      delta_vs = std::max(delta_vs, static_cast<uint64_t>(l.delta.n_v_heads) * static_cast<uint64_t>(l.delta.head));
      delta_heads = std::max(delta_heads, static_cast<uint64_t>(l.delta.n_v_heads));
    }
  }
  W = std::max(W, delta_vs);

  uint64_t floats = 0, bytes = 0;
  bytes += 5 * T * sizeof(int32_t) + T * sizeof(int32_t) + T * sizeof(float);  // step inputs, ids, log-probs
  if (last) bytes += S * (sizeof(SlotSampling) + sizeof(uint64_t)) + S * static_cast<uint64_t>(opt.n_ctx) * sizeof(int32_t);
  floats += T * (E + W + Q + 2 * K + Q + std::max(2 * F, E) + E);  // x y q k v att g tmp
  floats += T * fused_row + (gated_q ? T * Q : 0);
  if (delta_vs > 0) floats += T * (2 * delta_vs + fused_row + 2 * delta_heads);
  for (const LayerWeights& lw : w.layers) {
    if (const TensorView* rs = lw[LayerTensor::RouterScale]) floats += static_cast<uint64_t>(rs->n_elements());
  }
  if (c.per_layer_input > 0) {
    const uint64_t P = static_cast<uint64_t>(c.per_layer_input);
    floats += 2 * T * static_cast<uint64_t>(c.n_layer) * P + T * E + 2 * T * P;
  }
  if (c.has_moe()) {
    const uint64_t P = T * static_cast<uint64_t>(c.max_expert_used());
    uint64_t n_expert = 0;
    for (const LayerSpec& l : c.layers) n_expert = std::max(n_expert, static_cast<uint64_t>(l.n_expert));
    floats += T * n_expert + P + P * 2 * F + P * F + P * E + T * E;
    bytes += P * sizeof(int32_t) + P * F + (P * F / 32 + 1) * sizeof(float2);
    if (CudaStage::f16_expert_rows_from(opt, max_tokens)) bytes += P * F * sizeof(uint16_t);  // eh_
    // Grouped expert products: the pairs' order, the tiles and their count.
    bytes += P * sizeof(int32_t) + sizeof(int32_t) +
             static_cast<uint64_t>(moe_max_tiles(static_cast<int>(P), static_cast<int>(n_expert), 8)) * sizeof(int4);
  }
  if (c.has_moe()) {
    const std::vector<bool> host = local_host_experts(opt, range);
    if (std::find(host.begin(), host.end(), true) != host.end()) {
      const uint64_t P = T * static_cast<uint64_t>(c.max_expert_used());
      floats += T * E;  // the CPU's sums
      if (opt.expert_cache_bytes > 0) floats += P, bytes += 2 * P * sizeof(int32_t);  // the cache's split
    }
  }
  floats += 2 * T * F;                                                        // u act
  bytes += T * W + (T * W / 32 + 1) * sizeof(float2) + T * W * sizeof(__half);  // xq xds xh
  if (last) floats += static_cast<uint64_t>(CudaStage::logits_rows(opt.n_slots, max_tokens)) * static_cast<uint64_t>(c.n_vocab);

  uint64_t largest = 0, f16_elems = 0;
  matrix_sizes(c, w, largest, f16_elems);
  bytes += static_cast<uint64_t>(CudaStage::dequant_buffer_elems(opt, stage_uses_mmq(w, last, opt), max_tokens,
                                                                 static_cast<int64_t>(largest))) *
           sizeof(__half);

  floats += static_cast<uint64_t>(
      CudaStage::attention_scratch_max(c, range, opt.n_ctx, max_tokens, opt.attention_blocks_per_sm * sms));
  return floats * sizeof(float) + bytes + CudaStage::kCublasWorkspaceBytes;
}

VramFit fit_stage_options(const ModelConfig& c, const ModelWeights& all_w, CudaStageOptions& opt, bool last,
                          const StageFitOptions& fit) {
  // What the device holds: experts the user placed in host memory are left out.
  const std::vector<bool> placed = local_host_experts(opt, all_w.range);
  const bool user_placed = std::find(placed.begin(), placed.end(), true) != placed.end();
  const ModelWeights w = without_host_experts(all_w, placed);
  PIPELLM_CUDA_CHECK(cudaSetDevice(opt.device));
  size_t free_bytes = 0, total_bytes = 0;
  PIPELLM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  int sms = 0;
  PIPELLM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, opt.device));

  const StreamingOptions& so = opt.streaming;
  const int max_tokens = std::max(opt.max_batch_tokens, CudaStage::batch_bucket(opt.n_slots));
  VramFitInput in;
  // KV rows of windowed layers depend on the step size: the larger of the stage's and the
  // streamer's (512) makes the plan hold for both.
  in.sizes = vram_plan_input(c, w, opt.n_slots, opt.n_ctx, 0, std::max(512, max_tokens), opt.kv_type_k,
                             opt.kv_type_v);
  in.sizes.slots = std::max(2, so.streamer.slots);
  in.sizes.placement = so.placement;
  in.sizes.embeddings_in_host = so.embeddings_in_host;
  in.scratch_bytes = estimate_scratch_bytes(c, w, last, opt, sms);
  if (opt.resident_f16 && !so.enabled()) {
    uint64_t largest = 0, f16_elems = 0;
    matrix_sizes(c, w, largest, f16_elems);
    in.scratch_bytes += f16_elems * sizeof(__half);
  }
  in.free_bytes = free_bytes;
  in.margin_bytes = fit_margin(free_bytes);
  in.user_budget = so.vram_budget;
  if (so.budget_weights_only && so.vram_budget > 0) {  // as StreamedWeights widens it
    uint64_t largest = 0;
    for (uint64_t b : in.sizes.layer_bytes) largest = std::max(largest, b);
    in.user_budget += in.sizes.kv_bytes + static_cast<uint64_t>(in.sizes.slots) * largest;
  }
  in.gpu_layers = fit.gpu_layers;
  in.min_streamed = so.min_streamed_layers;
  for (const LayerWeights& l : w.layers) {
    for (LayerTensor r : all_layer_tensors()) {
      if (is_expert_stack(r) && l[r] != nullptr) in.layers_streamable = false;
    }
  }
  in.override_hint = fit.override_hint;
  if (!fit.reduce_hint.empty()) in.reduce_hint = fit.reduce_hint;
  // Experts in host memory need the device ring their uploads stream through (host_experts.h).
  const auto slot_bytes = [&](const std::vector<bool>& host) {
    return max_tokens < HostExperts::kUploadMinRows ? uint64_t{0} : upload_device_bytes(all_w, host);
  };
  if (user_placed) {
    in.scratch_bytes += slot_bytes(placed) + opt.expert_cache_bytes;
  } else if (c.has_moe()) {
    for (const LayerWeights& l : w.layers) in.expert_bytes.push_back(expert_stack_bytes(l));
    in.expert_slot_bytes = slot_bytes(std::vector<bool>(w.layers.size(), true));
  }

  const VramFit f = fit_vram(in);
  if (f.host_expert_layers > 0) {
    opt.host_experts.assign(static_cast<size_t>(c.n_layer), false);
    for (int k = 0; k < f.host_expert_layers; ++k) opt.host_experts[static_cast<size_t>(w.range.first + k)] = true;
    opt.expert_cache_bytes = f.expert_cache_bytes;
  } else if (f.mode == VramFitMode::AutoStreamed) {
    opt.streaming.vram_budget = f.budget;
  }
  opt.streaming.min_streamed_layers = f.min_streamed;
  return f;
}

std::unique_ptr<CudaStage> open_fitted_stage(const ModelConfig& c, const ModelWeights& w, bool first, bool last,
                                             CudaStageOptions opt, const StageFitOptions& fit) {
  const VramFit f = fit_stage_options(c, w, opt, last, fit);
  if (fit.log && !f.message.empty()) fit.log(f.message);  // before the upload, which may still fail
  auto stage = std::make_unique<CudaStage>(c, w, first, last, opt);
  if (fit.log) fit.log(stage->memory_report().format());
  return stage;
}

}  // namespace pipellm::cuda

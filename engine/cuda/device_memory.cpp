#include "engine/cuda/device_memory.h"

#include <cstdio>

#include "engine/cuda/cuda_stage.h"
#include "engine/model/vram_plan.h"

namespace pipellm::cuda {
namespace {

void add_matrix(const CudaMatrix& m, WeightMemory& out) {
  if (!m.storage.empty()) ++out.tensors;
  out.quantized += m.storage.bytes();
  out.f16 += m.f16.bytes();
}

void add_vector(const DeviceBuffer<float>& v, WeightMemory& out) {
  if (!v.empty()) ++out.tensors;
  out.quantized += v.bytes();
}

template <class... B>
uint64_t sum_bytes(const B&... b) {
  return (uint64_t{0} + ... + static_cast<uint64_t>(b.bytes()));
}

template <class T>
uint64_t sum_bytes(const std::vector<DeviceBuffer<T>>& v) {
  uint64_t n = 0;
  for (const auto& b : v) n += b.bytes();
  return n;
}

}  // namespace

WeightMemory weight_memory(const CudaWeights& w) {
  WeightMemory out;
  for (const CudaLayer& l : w.layers) {
    for (const CudaMatrix& m : l.mats) add_matrix(m, out);
    for (const DeviceBuffer<float>& v : l.vecs) add_vector(v, out);
  }
  // A tied output head only aliases the embedding (its own storage stays empty).
  for (const CudaMatrix* m : {&w.token_embd, &w.output, &w.per_layer_token_embd, &w.per_layer_model_proj}) {
    add_matrix(*m, out);
  }
  for (const DeviceBuffer<float>* v : {&w.output_norm, &w.rope_freqs, &w.per_layer_proj_norm}) add_vector(*v, out);
  return out;
}

std::string DeviceMemoryReport::format() const {
  const std::string i = "\n  ";
  std::string s = "cuda:" + std::to_string(device) + " memory (" + stage + "):";
  s += i + "weights      " + format_bytes(weight_bytes) + " quantized (" + std::to_string(weight_tensors) +
       " tensors), f16 copies " + format_bytes(f16_bytes);
  if (layers_streamed > 0 || embeddings_in_host) {
    s += i + "streaming    " + std::to_string(layers_streamed) + " of " + std::to_string(layers) +
         " layers streamed, ring " + std::to_string(ring_slots) + " x " +
         format_bytes(ring_slots > 0 ? ring_bytes / static_cast<uint64_t>(ring_slots) : 0) + " on the device, " +
         format_bytes(streamed_bytes) + "/pass from " + format_bytes(host_pinned_bytes) + " pinned host memory" +
         (embeddings_in_host ? " (embeddings read from host memory)" : "");
  }
  if (cpu_row_bytes > 0) {
    char share[96];
    if (cpu_row_pcie_gbs > 0) {
      std::snprintf(share, sizeof share, "%.0f%% (measured: CPU %.1f GB/s, PCIe %.1f GB/s)", 100 * cpu_row_share,
                    cpu_row_cpu_gbs, cpu_row_pcie_gbs);
    } else {
      std::snprintf(share, sizeof share, "%.0f%% (--cpu-rows)", 100 * cpu_row_share);
    }
    s += i + "CPU rows     " + share + " of each streamed matrix's rows, " + format_bytes(cpu_row_bytes) +
         " in host memory, multiplied by " + std::to_string(cpu_row_threads) +
         " CPU threads in decode; larger steps stream them through " + format_bytes(cpu_row_device_bytes) +
         " on the device";
  }
  if (host_expert_layers > 0) {
    s += i + "host experts " + std::to_string(host_expert_layers) + " of " + std::to_string(layers) +
         " layers' routed experts in host memory (" + format_bytes(host_expert_bytes) + "), computed by " +
         std::to_string(host_expert_threads) + " CPU threads" +
         (expert_slot_bytes > 0 ? "; large steps stream them through " + format_bytes(expert_slot_bytes) +
                                      " on the device"
                                : "; host copies not pinned: every step on the CPU");
    if (expert_cache_slots > 0) {
      const double rate = expert_cache_pairs > 0 ? 100.0 * static_cast<double>(expert_cache_hits) /
                                                       static_cast<double>(expert_cache_pairs)
                                                 : 0.0;
      char hit[64];
      std::snprintf(hit, sizeof hit, "%.1f%%", rate);
      s += i + "expert cache " + format_bytes(expert_cache_bytes) + ", " + std::to_string(expert_cache_used) + " of " +
           std::to_string(expert_cache_slots) + " slots in use, hit rate " + hit + " of " +
           std::to_string(expert_cache_pairs) + " pairs";
    }
  }
  s += i + "KV cache     " + format_bytes(kv_bytes);
  if (recurrent_bytes > 0) s += ", recurrent state " + format_bytes(recurrent_bytes);
  s += i + "scratch      " + format_bytes(scratch_bytes()) + ": activations " + format_bytes(activation_bytes) +
       ", cuBLAS workspace " + format_bytes(cublas_bytes) + ", dequantization " + format_bytes(dequant_bytes);
  s += i + "CUDA graphs  " + format_bytes(graph_bytes) + " (" + std::to_string(graphs) +
       " captured; a decode batch/context bucket is captured when first used)";
  s += i + "stage total  " + format_bytes(total()) + "; device " + format_bytes(device_total) + ": " +
       format_bytes(device_total - device_free) + " used, " + format_bytes(device_free) + " free";
  return s;
}

// A CudaStage member defined here: the accounting stays beside the report it fills. Every device
// buffer the stage owns is named below; a new one belongs in one of these sums.
DeviceMemoryReport CudaStage::memory_report() const {
  DeviceMemoryReport r;
  r.device = opt_.device;
  r.stage = "layers [" + std::to_string(range_.first) + ", " + std::to_string(range_.last) + ")" +
            (first_ ? " +embeddings" : "") + (last_ ? " +output" : "");
  const WeightMemory wm = weight_memory(*weights_);
  r.weight_bytes = wm.quantized;
  r.weight_tensors = wm.tensors;
  r.f16_bytes = wm.f16;
  r.layers = range_.size();
  if (streamed_) {
    const VramPlan& p = streamed_->plan();
    r.layers_streamed = p.n_streamed();
    r.streamed_bytes = p.streamed_bytes;
    r.host_pinned_bytes = streamed_->host_bytes();
    r.embeddings_in_host = p.embeddings_in_host;
    if (const LayerStreamer* s = streamed_->streamer()) {
      r.ring_slots = s->slots();
      r.ring_bytes = static_cast<uint64_t>(s->slots()) * s->slot_bytes();
    }
  }
  if (host_experts_) {
    for (int l = 0; l < range_.size(); ++l) r.host_expert_layers += host_experts_->holds(l) ? 1 : 0;
    r.host_expert_bytes = host_experts_->host_bytes();
    r.host_expert_threads = host_experts_->threads();
    r.expert_slot_bytes = host_experts_->device_bytes();
    if (const ExpertCache* c = host_experts_->cache()) {
      r.expert_cache_bytes = c->device_bytes();
      r.expert_cache_slots = c->slots();
      r.expert_cache_used = c->cached();
      r.expert_cache_hits = c->hits();
      r.expert_cache_pairs = c->pairs();
    }
  }
  if (cpu_rows_) {
    r.cpu_row_bytes = cpu_rows_->host_bytes();
    r.cpu_row_device_bytes = cpu_rows_->device_bytes();
    r.cpu_row_threads = cpu_rows_->threads();
    r.cpu_row_share = opt_.streaming.cpu_rows;
    r.cpu_row_pcie_gbs = cpu_rows_pcie_gbs_;
    r.cpu_row_cpu_gbs = cpu_rows_cpu_gbs_;
  }
  r.kv_bytes = sum_bytes(k_cache_) + sum_bytes(v_cache_);
  r.recurrent_bytes = sum_bytes(conv_state_) + sum_bytes(delta_state_);
  r.cublas_bytes = cublas_ws_.bytes();
  r.dequant_bytes = wh_.bytes();
  r.activation_bytes = sum_bytes(d_io_, d_next_, d_sampling_, d_counter_, d_history_, d_logprob_) +
                       sum_bytes(x_, y_, q_, k_, v_, qkv_, att_, g_, u_, act_, tmp_, logits_, attn_part_) +
                       sum_bytes(router_, route_w_, eg_, eu_, ed_, dense_, eq_, eds_, eh_, route_id_, gq_) +
                       sum_bytes(moe_order_, moe_n_tiles_, moe_tiles_) + sum_bytes(host_sum_, cache_w_, cache_id_, host_id_) +
                       sum_bytes(dz_, dg_, dbeta_, dy_, dout_) + sum_bytes(inp_pl_, pl_tok_, pl_x0_, pl_g_, pl_u_) +
                       sum_bytes(router_scale_) + sum_bytes(xq_, xds_, xh_);
  r.graph_bytes = graph_bytes_;
  r.graphs = graphs_.size();
  size_t free_bytes = 0, total_bytes = 0;
  PIPELLM_CUDA_CHECK(cudaSetDevice(opt_.device));
  PIPELLM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  r.device_free = free_bytes;
  r.device_total = total_bytes;
  return r;
}

}  // namespace pipellm::cuda

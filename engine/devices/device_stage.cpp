#include "engine/devices/device_stage.h"

#include "base/error.h"
#include "engine/model/model_weights.h"
#include "engine/pipeline/gpu_split.h"
#ifdef PIPELLM_HAVE_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/stage_fit.h"
#endif

namespace pipellm {

int cuda_device_index(const std::string& device, const std::string& what) {
  if (device == "cpu") return -1;
  const auto bad = [&] { return InvalidArgument(what + ": '" + device + "' is not cpu, cuda or cuda:N"); };
  if (device.rfind("cuda", 0) != 0) throw bad();
  std::vector<int> gpus;
  try {
    gpus = listed_gpus(normalize_device(device));  // one parser of device names (gpu_split.h)
  } catch (const InvalidArgument&) {
    throw bad();
  }
  if (gpus.size() > 1) throw bad();
#ifdef PIPELLM_HAVE_CUDA
  return gpus.empty() ? 0 : gpus.front();
#else
  throw InvalidArgument(what + ": '" + device + "': this build has no CUDA");
#endif
}

std::vector<uint64_t> cuda_memory_bytes() {
  std::vector<uint64_t> bytes;
#ifdef PIPELLM_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no GPU: nothing to report, nothing left pending
    return bytes;
  }
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) {
      (void)cudaGetLastError();
      return {};
    }
    bytes.push_back(p.totalGlobalMem);
  }
#endif
  return bytes;
}

std::unique_ptr<Stage> open_cuda_stage(const GgufFile& file, const ModelConfig& c, const DeviceStageOptions& opt) {
  const int dev = cuda_device_index(opt.device);
  if (dev < 0) return nullptr;
#ifdef PIPELLM_HAVE_CUDA
  const ModelWeights w = ModelWeights::load(file, c, LayerRange::all(c), true, true);
  cuda::CudaStageOptions o;
  o.device = dev;
  o.n_ctx = opt.n_ctx;
  o.n_slots = opt.n_slots;
  o.max_batch_tokens = opt.max_batch_tokens;
  o.use_graphs = opt.graphs;
  o.streaming.vram_budget = opt.vram_budget;
  o.kv_type_k = opt.kv_type_k;
  o.kv_type_v = opt.kv_type_v;
  o.host_experts = host_expert_layers(c, opt.experts);
  o.host_threads = opt.host_threads;
  o.expert_cache_bytes = opt.experts.cache_bytes;
  o.streaming.cpu_rows = opt.cpu_rows;
  if (opt.log) {
    if (const std::string d = describe_host_experts(o.host_experts); !d.empty()) opt.log("placement: " + d);
  }
  // llama.cpp's -ngl N keeps N layers on the GPU; here the others stream from pinned host
  // memory each pass, part of their rows multiplied by the CPU in decode with --cpu-rows.
  cuda::StageFitOptions fit;
  fit.gpu_layers = opt.gpu_layers;
  fit.log = opt.log;
  fit.override_hint = opt.override_hint;
  return cuda::open_fitted_stage(c, w, true, true, o, fit);
#else
  (void)file;
  (void)c;
  return nullptr;
#endif
}

}  // namespace pipellm

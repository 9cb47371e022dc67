#include "engine/pipeline/gpu_split.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "base/error.h"

namespace pipellm {
namespace {

// "0".."4095" without signs or spaces; nullopt otherwise.
std::optional<int> gpu_number(const std::string& s) {
  if (s.empty() || s.size() > 4 || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoi(s);
}

std::string gib(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

// "cuda:0<sep>cuda:1..."
std::string join_gpus(const std::vector<int>& gpus, const char* sep) {
  std::string s;
  for (int g : gpus) s += (s.empty() ? "" : sep) + ("cuda:" + std::to_string(g));
  return s;
}

std::string gpu_names(const std::vector<int>& gpus) { return join_gpus(gpus, ", "); }

}  // namespace

SplitMode parse_split_mode(const std::string& v) {
  if (v == "none") return SplitMode::None;
  if (v == "layer") return SplitMode::Layer;
  if (v == "row") {
    throw InvalidArgument("--split-mode row: splitting each matrix's rows over the GPUs (tensor parallelism) is not "
                          "supported; -sm layer gives each GPU a range of layers (a pipeline), -sm none uses one GPU");
  }
  throw InvalidArgument("--split-mode: '" + v + "' is not none, layer or row");
}

std::string normalize_device(const std::string& v) {
  if (v == "cpu" || v == "none") return "cpu";
  if (v == "cuda") return v;
  const auto bad = [&](const std::string& why) {
    return InvalidArgument("--device: '" + v + "' " + why +
                           " (cpu, cuda, cuda:N, or GPUs separated by commas: cuda:0,cuda:1 or CUDA0,CUDA1)");
  };
  std::vector<int> gpus;
  size_t start = 0;
  while (start <= v.size()) {
    const size_t comma = std::min(v.find(',', start), v.size());
    const std::string item = v.substr(start, comma - start);
    std::optional<int> n;
    if (item.rfind("cuda:", 0) == 0) n = gpu_number(item.substr(5));
    else if (item.rfind("CUDA", 0) == 0) n = gpu_number(item.substr(4));
    if (!n) throw bad(item.empty() ? "has an empty entry" : "names '" + item + "'");
    if (std::find(gpus.begin(), gpus.end(), *n) != gpus.end()) throw bad("lists cuda:" + std::to_string(*n) + " twice");
    gpus.push_back(*n);
    start = comma + 1;
  }
  return join_gpus(gpus, ",");
}

std::vector<int> listed_gpus(const std::string& device) {
  if (device == "cpu" || device == "cuda") return {};
  std::vector<int> gpus;
  size_t start = 0;
  while (start < device.size()) {
    const size_t comma = std::min(device.find(',', start), device.size());
    gpus.push_back(std::stoi(device.substr(start + 5, comma - start - 5)));  // "cuda:N"
    start = comma + 1;
  }
  return gpus;
}

std::vector<double> parse_tensor_split(const std::string& v) {
  std::vector<double> shares;
  size_t start = 0;
  bool positive = false;
  while (start <= v.size()) {
    const size_t sep = std::min(v.find_first_of(",/", start), v.size());
    const std::string item = v.substr(start, sep - start);
    double x = -1.0;
    size_t used = 0;
    try {
      x = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || !std::isfinite(x) || x < 0.0) {
      throw InvalidArgument("--tensor-split: '" + item + "' in '" + v +
                            "' is not a share (non-negative numbers separated by , or /, e.g. 3,1)");
    }
    positive = positive || x > 0.0;
    shares.push_back(x);
    start = sep + 1;
  }
  if (!positive) throw InvalidArgument("--tensor-split: '" + v + "' gives no GPU a share");
  return shares;
}

std::vector<std::pair<int, int>> layers_by_share(int n_layer, const std::vector<double>& shares) {
  double total = 0.0;
  for (double s : shares) total += s;
  std::vector<double> cumulative;
  double c = 0.0;
  for (double s : shares) cumulative.push_back((c += s) / total);
  std::vector<std::pair<int, int>> out(shares.size(), {0, 0});
  int layer = 0;
  for (size_t d = 0; d < shares.size(); ++d) {
    out[d].first = layer;
    // Layers i with i / (n_layer + 1) < c_d, not taken by an earlier GPU; the last takes the rest.
    while (layer < n_layer && (d + 1 == shares.size() || static_cast<double>(layer) / (n_layer + 1) < cumulative[d])) {
      ++layer;
    }
    out[d].second = layer;
  }
  return out;
}

GpuPlacement place_on_gpus(const GpuPlacementRequest& r, int n_layer) {
  std::vector<int> gpus = r.listed;
  if (gpus.empty()) {
    for (int g = 0; g < std::max(1, r.visible_gpus); ++g) gpus.push_back(g);
  }
  for (int g : gpus) {
    if (!r.listed.empty() && g >= r.visible_gpus) {
      throw InvalidArgument("--device: cuda:" + std::to_string(g) + ": this machine shows " +
                            std::to_string(r.visible_gpus) + " GPU(s)");
    }
  }
  GpuPlacement p;
  const auto one = [&](const std::string& why) {
    const int i = r.main_gpu.value_or(0);
    if (i >= static_cast<int>(gpus.size())) {
      throw InvalidArgument("--main-gpu " + std::to_string(i) + ": there are " + std::to_string(gpus.size()) +
                            " GPU(s) to choose from (" + gpu_names(gpus) + ")");
    }
    p.gpus = {gpus[static_cast<size_t>(i)]};
    p.reason = "cuda:" + std::to_string(p.gpus[0]) + " (" + why + ")";
    return p;
  };
  if (r.mode == SplitMode::None) return one("-sm none");
  if (!r.tensor_split.empty()) {
    if (r.tensor_split.size() > gpus.size()) {
      throw InvalidArgument("--tensor-split: " + std::to_string(r.tensor_split.size()) + " shares for " +
                            std::to_string(gpus.size()) + " GPU(s) (" + gpu_names(gpus) + ")");
    }
    std::vector<double> shares = r.tensor_split;
    shares.resize(gpus.size(), 0.0);  // GPUs without a share get no layers, as in llama.cpp
    const auto layers = layers_by_share(n_layer, shares);
    for (size_t d = 0; d < gpus.size(); ++d) {
      if (layers[d].second > layers[d].first) {
        p.gpus.push_back(gpus[d]);
        p.layers.push_back(layers[d]);
      }
    }
    if (p.gpus.size() == 1) {
      p.layers.clear();
      p.reason = "cuda:" + std::to_string(p.gpus[0]) + " (every layer by -ts)";
      return p;
    }
    p.reason = "layers split over " + gpu_names(p.gpus) + " by -ts";
    return p;
  }
  if (gpus.size() == 1) return one(r.listed.empty() ? "the only GPU" : "--device");
  if (r.mode == SplitMode::Layer || !r.listed.empty()) {
    p.gpus = gpus;
    p.reason = "layers split over " + gpu_names(gpus) + (r.mode == SplitMode::Layer ? " (-sm layer)" : " (--device)");
    return p;
  }
  // Left to choose between several GPUs: one when the model fits it.
  const size_t first = static_cast<size_t>(std::min<int>(r.main_gpu.value_or(0), static_cast<int>(gpus.size()) - 1));
  if (r.gpu_bytes.size() > first && r.model_bytes <= usable_gpu_bytes(r.gpu_bytes[first])) {
    return one("the model's " + gib(r.model_bytes) + " fit its " + gib(r.gpu_bytes[first]) + "; -sm layer spreads it over all " +
               std::to_string(gpus.size()) + " GPUs");
  }
  if (r.gpu_bytes.empty()) return one("GPU memory unknown; -sm layer spreads the model over all " + std::to_string(gpus.size()) + " GPUs");
  p.gpus = gpus;
  p.reason = "layers split over " + gpu_names(gpus) + ": the model's " + gib(r.model_bytes) + " do not fit one GPU";
  return p;
}

std::string one_gpu_device(const std::string& device, GpuPlacementRequest r, int n_layer, const std::string& program) {
  if (device == "cpu") return device;
  r.listed = listed_gpus(device);
  r.gpu_bytes.clear();
  const GpuPlacement p = place_on_gpus(r, n_layer);
  if (p.pipeline()) {
    throw InvalidArgument(program + " runs on one GPU, but the flags spread the model over " + gpu_names(p.gpus) +
                          ": serve it over several with pipellm-coordinator (the same flags), or pick one GPU "
                          "(--device cuda:N, or -sm none -mg N)");
  }
  return "cuda:" + std::to_string(p.gpus[0]);
}

PipelineConfig gpu_pipeline_config(const GpuPipelineSettings& s, const GpuPlacement& p,
                                   const std::vector<uint64_t>& gpu_bytes) {
  PipelineConfig c;
  c.source = "the GPU pipeline of --device/-sm/-ts";
  c.model = std::filesystem::absolute(s.model).string();
  c.context_length = s.n_ctx;
  c.max_sequences = s.n_slots;
  c.micro_batches = static_cast<int>(p.gpus.size());
  c.max_batch_tokens = s.max_batch_tokens;
  c.prefill_chunk = std::min(c.prefill_chunk, s.max_batch_tokens);
  c.kv_cache_type = s.kv_type_k;
  c.kv_cache_type_k = s.kv_type_k;
  c.kv_cache_type_v = s.kv_type_v;
  c.threads = s.threads;
  c.transport = TransportKind::Auto;
  for (size_t i = 0; i < p.gpus.size(); ++i) {
    StageSpec st;
    st.device_index = p.gpus[i];
    st.device = "cuda:" + std::to_string(st.device_index);
    if (!p.layers.empty()) st.layers = p.layers[i];
    else if (static_cast<size_t>(st.device_index) < gpu_bytes.size()) {
      st.memory_bytes = usable_gpu_bytes(gpu_bytes[static_cast<size_t>(st.device_index)]);
    }
    st.experts = s.experts;
    st.cpu_rows = s.cpu_rows;
    c.stages.push_back(st);
  }
  return c;
}

}  // namespace pipellm

#include "flags/gpu_flags.h"

#include <CLI/CLI.hpp>

#include "base/error.h"
#include "engine/pipeline/plan_check.h"

namespace pipellm::flags {
namespace {

// CLI11 puts the flag's name before a validation message; the engine's messages start with it.
std::string without_flag(const std::string& flag, const std::string& message) {
  const std::string prefix = flag + ": ";
  return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
}

// parse(v), its InvalidArgument as the usage error of `flag`.
template <class Parse>
auto parsed(const std::string& flag, const std::string& v, Parse parse) {
  try {
    return parse(v);
  } catch (const InvalidArgument& e) {
    throw CLI::ValidationError(flag, without_flag(flag, e.what()));
  }
}

}  // namespace

void add_gpu_split_flags(CLI::App& app, GpuSplitFlags& f) {
  const std::string g = "Model";
  CLI::Option* device = app.get_option("--device");
  device->description("cpu, cuda, cuda:N, or several GPUs: cuda:0,cuda:1 or CUDA0,CUDA1 (-dev)");
  device->transform(
      [](std::string v) {
        try {
          return normalize_device(v);
        } catch (const InvalidArgument& e) {
          throw CLI::ValidationError(without_flag("--device", e.what()));
        }
      },
      "");
  app.add_option_function<std::string>(
         "--split-mode",
         [&f](const std::string& v) { f.split_mode = parsed("--split-mode", v, parse_split_mode); },
         "with several GPUs: layer (the default when the model needs them) gives each GPU a range of layers, "
         "one pipeline stage per GPU; none uses one, -mg (-sm)")
      ->group(g);
  app.add_option_function<std::string>(
         "--tensor-split",
         [&f](const std::string& v) { f.tensor_split = parsed("--tensor-split", v, parse_tensor_split); },
         "shares of the layers per GPU, e.g. 3,1, assigned as llama.cpp does (-ts)")
      ->group(g);
  app.add_option_function<int>(
         "--main-gpu", [&f](int v) { f.main_gpu = v; }, "the GPU of -sm none, an index into the GPUs (-mg)")
      ->check(CLI::Range(0, 4095))
      ->group(g);
}

GpuPlacementRequest placement_request(const std::string& device, const GpuSplitFlags& f) {
  GpuPlacementRequest r;
  r.listed = listed_gpus(device);
  r.mode = f.split_mode;
  r.tensor_split = f.tensor_split;
  r.main_gpu = f.main_gpu;
  r.visible_gpus = visible_gpu_count();
  return r;
}

}  // namespace pipellm::flags

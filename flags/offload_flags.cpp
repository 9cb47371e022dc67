#include "flags/offload_flags.h"

#include <CLI/CLI.hpp>

#include "base/error.h"
#include "engine/model/vram_plan.h"

namespace pipellm::flags {

void add_expert_flags(CLI::App& app, ExpertPlacementFlags& f) {
  const std::string g = "Model";
  app.add_flag("--cpu-moe", f.cpu_moe,
               "CUDA: keep every layer's routed experts in host memory, multiplied by the CPU (-cmoe)")
      ->group(g);
  app.add_option("--n-cpu-moe", f.n_cpu_moe,
                 "CUDA: the same for the routed experts of layers 0 .. N-1 (-ncmoe)")
      ->check(CLI::Range(0, 1 << 20))
      ->group(g);
  app.add_option_function<std::vector<std::string>>(
         "--override-tensor",
         [&f](const std::vector<std::string>& values) {
           for (const std::string& v : values) {
             try {
               for (TensorOverride& o : parse_tensor_overrides(v)) f.overrides.push_back(std::move(o));
             } catch (const InvalidArgument& e) {
               throw CLI::ValidationError("--override-tensor", e.what());
             }
           }
         },
         "PATTERN=CPU|CUDA0[,...], repeatable: tensors whose name matches PATTERN go there, the first match "
         "deciding; only routed expert stacks may go to the CPU (-ot)")
      ->allow_extra_args(false)
      ->group(g);
  app.add_option_function<std::string>(
         "--expert-cache",
         [&f](const std::string& v) {
           try {
             f.cache_bytes = parse_byte_size(v, "--expert-cache");
           } catch (const std::exception& e) {
             throw CLI::ValidationError("--expert-cache", e.what());
           }
         },
         "CUDA: GPU memory (e.g. 4GiB) that keeps the most used of the experts left in host memory; its hit rate "
         "is in the memory report")
      ->group(g);
}

void add_cpu_rows_flag(CLI::App& app, double& cpu_rows) {
  app.add_option_function<std::string>(
         "--cpu-rows",
         [&cpu_rows](const std::string& v) {
           const std::optional<double> f = parse_cpu_rows_share(v);
           if (!f) throw CLI::ValidationError("--cpu-rows", "'" + v + "' is not 'auto' or a share in [0, 0.95]");
           cpu_rows = *f;
         },
         "CUDA, with layers streamed (-ngl N, --vram-budget): the share of each streamed matrix's rows the CPU "
         "multiplies in decode while PCIe brings the rest; 'auto': from the two rates measured at load; 0: none")
      ->group("Model");
}

}  // namespace pipellm::flags

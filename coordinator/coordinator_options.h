// Command line of pipellm-coordinator.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "base/tensor_type.h"
#include "engine/model/expert_placement.h"
#include "flags/gpu_flags.h"
#include "flags/llama_flags.h"
#include "coordinator/serving_options.h"

namespace pipellm::coord {

constexpr const char* kDefaultGrpcListen = "127.0.0.1:50051";

struct CoordinatorOptions {
  std::string config;           // pipeline YAML (model, stages, context, coordinator link address)
  std::string model;            // GGUF path (in-process backend without a config)
  std::string backend = "auto"; // auto | inprocess | mpirun | attach
  std::string listen = kDefaultGrpcListen;
  std::string link_listen;      // head link address; default: the config's `coordinator`, else 127.0.0.1:0
  std::string link_secret_file; // attach: the secret the stages' Hello must carry (else $PIPELLM_LINK_SECRET)
  int link_handshake_ms = 10000; // a link connection's time to say Hello before it is dropped
  std::string port_file;        // write the bound gRPC port here once serving starts
  // mpirun backend
  int n_ranks = 0;              // 0: one per stage of the config
  std::string mpirun = "mpirun";
  std::string stage_binary;     // default: pipellm-stage next to this program, else on PATH
  std::vector<std::string> mpirun_args;
  std::vector<std::string> stage_args;
  bool restart_on_failure = false;
  int max_restarts = 10;
  int startup_timeout_s = 120;
  // Hang detection (coordinator/stage_watchdog.h): the least time without progress, and the
  // allowance of a launch's first step (before any step time is measured).
  int stage_hang_ms = 3000;
  int stage_first_step_ms = 60000;
  // in-process backend (also taken from the config when given)
  int n_ctx = 0;       // 0: config, else the model's training context up to 4096
  bool ctx_from_model = false;  // -c 0: the model's whole training context
  int n_slots = 0;     // 0: config, else 4
  bool ctx_shared = false;  // -np N: the N sequences share the context (each -c / N), as llama-server's
  int n_threads = 0;   // 0: config, else all
  std::string device = "cpu";  // cpu | cuda | cuda:N | cuda:0,cuda:1 (served_gpus.h)
  flags::GpuSplitFlags split;  // -sm, -ts, -mg
  std::optional<TensorType> kv_type_k, kv_type_v;  // -ctk / -ctv (else the config's, else f16)
  int gpu_layers = -1;         // -ngl N: N layers resident on the GPU, the rest streamed (-1: all)
  ExpertPlacementFlags experts;  // --cpu-moe, --n-cpu-moe, -ot (CUDA devices)
  double cpu_rows = 0.0;         // --cpu-rows (CUDA devices, streamed layers)
  bool no_graphs = false;
  int max_batch_tokens = 0;    // 0: config, else 512
  int debug_step_delay_ms = 0;  // tests: slow the in-process head down
  // admission and limits
  int max_queue = 64;
  int max_prompt_tokens = 0;
  int max_tokens_limit = 0;
  int default_max_tokens = 0;   // 0: until end of generation or the context (llama-server's -n -1)
  flags::SamplingFlags sampling;  // what requests leave out (--temp, --top-k, -s, -n ...)
  std::string chat_template;      // --chat-template NAME|JINJA (else the model's)
  bool embeddings = false;        // --embeddings: /v1/embeddings and /embedding (serving_setup.h)
  std::string pooling;            // --pooling none|mean|cls|last ("": the model's)
  int shutdown_grace_s = 10;
  std::string log_level = "info";
  ServingOptions serving;  // HTTP, API keys, TLS, limits (serving_options.h)
};

// Parses argv; on --help or a usage error prints and exits (CLI11 conventions).
CoordinatorOptions parse_coordinator_options(int argc, char** argv);

}  // namespace pipellm::coord

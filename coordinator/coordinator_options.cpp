#include "coordinator/coordinator_options.h"

#include <CLI/CLI.hpp>

#include "base/version.h"
#include "flags/offload_flags.h"
#include "flags/llama_flags.h"

namespace pipellm::coord {

CoordinatorOptions parse_coordinator_options(int argc, char** argv) {
  CoordinatorOptions o;
  CLI::App app{"pipellm-coordinator: the gRPC front door of PipeLLM"};
  app.set_version_flag("--version", std::string("pipellm-coordinator ") + pipellm_version());
  app.add_option("--config", o.config, "pipeline config (YAML)");
  // -m, -c, -t, -np, --device, -ngl, -fa, -ctk, -ctv: llama-server's spellings (flags/llama_flags.h);
  // they set up the in-process backend (--model without --config).
  flags::ModelFlags mf;
  flags::add_model_flags(app, mf, PIPELLM_WITH_CUDA, /*parallel=*/true);
  flags::add_gpu_split_flags(app, o.split);
  flags::add_expert_flags(app, o.experts);
  flags::add_cpu_rows_flag(app, o.cpu_rows);
  app.add_option("--backend", o.backend, "auto | inprocess | mpirun | attach")
      ->check(CLI::IsMember({"auto", "inprocess", "mpirun", "attach"}));
  app.add_option("--listen", o.listen, "gRPC address (host:port; port 0 picks one)");
  app.add_option("--link", o.link_listen, "address the head stage connects to (default: config `coordinator`)");
  app.add_option("--link-secret-file", o.link_secret_file,
                 "--backend attach: file holding the secret the stages give in $PIPELLM_LINK_SECRET "
                 "(default: this process's $PIPELLM_LINK_SECRET)");
  app.add_option("--link-handshake-ms", o.link_handshake_ms, "time a link connection has to say Hello")
      ->check(CLI::Range(1, 3600000));
  app.add_option("--port-file", o.port_file, "write the gRPC port here when serving");
  app.add_option("--np", o.n_ranks, "MPI ranks (default: the config's stages)")->check(CLI::Range(0, 4096));
  app.add_option("--mpirun", o.mpirun, "mpirun program");
  app.add_option("--stage-bin", o.stage_binary, "pipellm-stage program");
  app.add_option("--mpirun-arg", o.mpirun_args, "extra mpirun argument (repeatable)")->allow_extra_args(false);
  app.add_option("--stage-arg", o.stage_args, "extra pipellm-stage argument (repeatable)")->allow_extra_args(false);
  app.add_flag("--restart-on-failure", o.restart_on_failure, "relaunch the stages when they fail");
  app.add_option("--max-restarts", o.max_restarts, "give up after this many relaunches")->check(CLI::Range(0, 1000000));
  app.add_option("--startup-timeout", o.startup_timeout_s, "seconds for the head stage to connect")
      ->check(CLI::Range(1, 86400));
  app.add_option("--stage-hang-ms", o.stage_hang_ms,
                 "the stages count as hung (like dead) after this long without a heartbeat or a step back; the "
                 "deadline grows to 8x the measured step time")
      ->check(CLI::Range(200, 3600000));
  app.add_option("--stage-first-step-ms", o.stage_first_step_ms,
                 "a launch's first step may take this long (warm-up) before the stages count as hung")
      ->check(CLI::Range(200, 3600000));
  app.add_flag("--no-graphs", o.no_graphs, "in-process CUDA: run decode steps eagerly (ablation)");
  app.add_option("--batch-tokens", o.max_batch_tokens, "tokens per step (in-process backend; 0: config, else 512; as -ub)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--debug-step-delay-ms", o.debug_step_delay_ms, "tests: sleep per step (in-process backend)")
      ->check(CLI::Range(0, 60000));
  app.add_option("--max-queue", o.max_queue, "requests waiting beyond those running")->check(CLI::Range(0, 1000000));
  app.add_option("--max-prompt-tokens", o.max_prompt_tokens, "per-request prompt limit (0: the context)")
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--max-tokens-limit", o.max_tokens_limit, "per-request max_tokens limit (0: the context)")
      ->check(CLI::Range(0, 1 << 30));
  // The sampling flags set what requests leave out (llama-server's server-wide defaults); -n is
  // the max_tokens / n_predict of requests without one (-1, the default: to the end).
  flags::add_sampling_flags(app, o.sampling);
  app.add_option_function<int>(
         "--default-max-tokens", [&o](int n) { o.sampling.n_predict = n; }, "the same as -n")
      ->check(CLI::Range(-1, 1 << 30));
  flags::add_chat_template_flags(app, o.chat_template);
  // llama-server's: the embedding routes answer 501 without --embeddings (--embedding too).
  app.add_flag("--embeddings,--embedding", o.embeddings,
               "serve /v1/embeddings and /embedding (computed on this machine's CPU, whatever runs generation)");
  app.add_option("--pooling", o.pooling, "embeddings: none | mean | cls | last (default: the model's pooling_type)")
      ->check(CLI::IsMember({"none", "mean", "cls", "last"}));
  app.add_option("--shutdown-grace", o.shutdown_grace_s, "seconds open streams get on SIGTERM")->check(CLI::Range(0, 86400));
  app.add_option("--log-level", o.log_level, "trace | debug | info | warn | error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  add_serving_options(app, o.serving);
  int ubatch = 0;
  flags::add_ubatch_flag(app, ubatch);
  flags::add_accepted_llama_flags(app, /*server=*/true);
  if (auto code = flags::parse(app, argc, argv)) std::exit(*code);
  try {
    if (mf.model.empty() && o.config.empty()) throw CLI::ValidationError("give --config or -m/--model");
    if (!o.sampling.grammar.empty() || !o.sampling.json_schema.empty()) {
      throw CLI::ValidationError("--grammar / --json-schema",
                                 "not server-wide here: send `grammar` / `json_schema` / `response_format` per request");
    }
    // A key source named but empty would mean "no keys": fail closed (issue 21 item 7).
    if (app.count("--api-keys-file") > 0 && o.serving.api_keys_file.empty()) {
      throw CLI::ValidationError("--api-keys-file", "empty path (leave the setting out to serve without keys)");
    }
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e) == 0 ? 0 : 2);
  }
  o.model = mf.model;
  o.n_ctx = mf.ctx_size;
  o.ctx_from_model = mf.ctx_from_model;
  if (ubatch > 0) o.max_batch_tokens = ubatch;
  o.n_slots = mf.parallel;
  o.ctx_shared = mf.ctx_shared;
  o.n_threads = mf.threads;
  o.device = mf.device;
  o.gpu_layers = mf.n_gpu_layers.value_or(-1);
  o.kv_type_k = mf.cache_type_k;
  o.kv_type_v = mf.cache_type_v;
  o.default_max_tokens = std::max(0, o.sampling.n_predict.value_or(-1));  // RequestLimits: 0 is "to the end"
  finish_serving_options(o.serving);
  return o;
}

}  // namespace pipellm::coord

// pipellm-link-head: a one-process head stage (the whole model on the CPU) that serves the
// coordinator link. Takes the same --config/--coordinator flags as pipellm-stage, so the
// coordinator's mpirun backend can launch it (`--stage-bin pipellm-link-head`, -np 1); used by
// the fault tests, and for single-stage CPU serving without the MPI worker.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>

#include "base/version.h"
#include "engine/cpu/cpu_model.h"
#include "engine/link/serve_link.h"
#include "engine/pipeline/inproc_transport.h"
#include "engine/pipeline/stage_factory.h"
#include "engine/pipeline/pipeline_config.h"

int main(int argc, char** argv) {
  using namespace pipellm;
  CLI::App app{"pipellm-link-head: a single-process head stage for pipellm-coordinator"};
  app.set_version_flag("--version", std::string("pipellm-link-head ") + pipellm_version());
  std::string config, model, coordinator, pid_file;
  int step_delay_ms = 0;
  app.add_option("--config", config, "pipeline config (YAML)")->required();
  app.add_option("--model", model, "override the config's model");
  app.add_option("--coordinator", coordinator, "coordinator link address (default: the config's)");
  app.add_option("--pid-file", pid_file, "write this process's pid here");
  app.add_option("--debug-step-delay-ms", step_delay_ms, "tests: sleep per step");
  CLI11_PARSE(app, argc, argv);
  try {
    PipelineConfig cfg = PipelineConfig::load(config);
    if (!model.empty()) cfg.model = model;
    if (coordinator.empty()) coordinator = cfg.coordinator;
    if (coordinator.empty()) throw InvalidArgument("no coordinator address (--coordinator or `coordinator:` in the config)");
    if (!pid_file.empty()) std::ofstream(pid_file) << ::getpid() << "\n";
    CpuModelOptions mo;
    mo.stage = cpu_stage_options(cfg);
    mo.n_threads = cfg.threads;
    auto m = CpuModel::open(cfg.model, mo);
    InprocHub hub(1);
    InprocTransport transport(hub, 0);
    StageRunner runner(m->stage(), transport);
    // The one rank is the tail: it samples, so it matches grammars against the model's tokens.
    const link::GrammarSupport grammar = link::grammar_support(m->file());
    runner.set_grammar_vocabulary(grammar.vocab);
    runner.set_step_delay(std::chrono::milliseconds(step_delay_ms));
    std::string name = cfg.model.substr(cfg.model.find_last_of('/') + 1);
    auto hello = link::hello_for(m->stage(), name, cfg.context_length, cfg.max_sequences, 1,
                                 "link-head:[0," + std::to_string(m->config().n_layer) + ")");
    hello.secret = link::link_secret_from_env();  // the coordinator's, for this launch
    if (hello.secret.empty()) throw InvalidArgument(std::string("$") + link::kLinkSecretEnv + " is not set");
    auto head = link::HeadLink::connect(coordinator, hello, 30000);
    link::ServeOptions so;  // statistics too: the heartbeat reports steps from them
    so.grammar_refusal = grammar.refusal;
    so.stats = [&] {
      std::vector<link::StageStatsMsg> out;
      for (const RankStats& s : runner.stage_stats()) {
        out.push_back({s.rank, "cpu", s.steps, s.step_seconds, s.transfer_seconds, s.device_bytes});
      }
      return out;
    };
    link::serve_link(runner, *head, scheduler_options(cfg, m->stage()), m->config().n_vocab, so);
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("pipellm-link-head: {}", e.what());
    return 1;
  }
}

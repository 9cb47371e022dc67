#include "coordinator/inprocess_launcher.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include "engine/link/serve_link.h"
#include "engine/pipeline/inproc_transport.h"
#include "engine/pipeline/stage_factory.h"
#include "engine/pipeline/stage_runner.h"

namespace pipellm::coord {

namespace {

class HeadThread : public HeadProcess {
 public:
  HeadThread(Stage& stage, const std::string& name, const InProcessOptions& opt, const std::string& address,
             const std::string& secret, const link::GrammarSupport& grammar) {
    thread_ = std::thread([this, &stage, name, opt, address, secret, grammar] {
      std::string why = "the head thread returned";
      try {
        InprocHub hub(1);
        InprocTransport transport(hub, 0);
        StageRunner runner(stage, transport);
        runner.set_grammar_vocabulary(grammar.vocab);  // the one stage is the tail
        runner.set_step_delay(std::chrono::milliseconds(opt.debug_step_delay_ms));
        const std::string plan = "in-process " + opt.device + ":[0," + std::to_string(stage.config().n_layer) + ")";
        link::HelloMsg hello = link::hello_for(stage, name, stage.n_ctx(), stage.n_slots(), 1, plan);
        hello.secret = secret;
        auto head = link::HeadLink::connect(address, hello, 10000);
        SchedulerOptions so;
        so.n_slots = stage.n_slots();
        so.n_ctx = stage.n_ctx();
        so.max_batch_tokens = opt.max_batch_tokens;
        so.prefill_chunk = opt.prefill_chunk;
        so = fit_to_stage(so, stage);
        const auto stats = [&] {
          std::vector<link::StageStatsMsg> out;
          for (const RankStats& s : runner.stage_stats()) {
            out.push_back({s.rank, opt.device, s.steps, s.step_seconds, s.transfer_seconds, s.device_bytes});
          }
          return out;
        };
        link::ServeOptions o;
        o.stats = stats;
        o.stop = &stop_;
        o.grammar_refusal = grammar.refusal;
        const link::ServeResult r = link::serve_link(runner, *head, so, stage.config().n_vocab, o);
        why = "the head thread finished (" + r.end_reason + ")";
      } catch (const std::exception& e) {
        why = std::string("the head thread ended: ") + e.what();
      }
      std::lock_guard<std::mutex> lock(mu_);
      exit_ = why;
    });
  }
  ~HeadThread() override { terminate(std::chrono::milliseconds(0)); }

  std::optional<std::string> exited() override {
    std::lock_guard<std::mutex> lock(mu_);
    return exit_;
  }
  void terminate(std::chrono::milliseconds) override {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::optional<std::string> exit_;
  std::thread thread_;
};

std::string stem(const std::string& path) {
  const auto slash = path.find_last_of('/');
  std::string s = slash == std::string::npos ? path : path.substr(slash + 1);
  const auto dot = s.rfind(".gguf");
  return dot == std::string::npos ? s : s.substr(0, dot);
}

}  // namespace

InProcessLauncher::InProcessLauncher(const std::string& model_path, const InProcessOptions& opt)
    : model_name_(stem(model_path)), opt_(opt) {
  if (cuda_device_index(opt.device) < 0) {
    cpu_ = CpuModel::open(model_path, opt.cpu);
    grammar_ = link::grammar_support(cpu_->file());  // once: every relaunch shares it
    return;
  }
  // The CUDA stage reads the mapping only while it uploads the weights.
  const auto file = GgufFile::open(model_path);
  DeviceStageOptions d;
  d.device = opt.device;
  d.n_ctx = opt.cpu.stage.n_ctx;
  d.n_slots = opt.cpu.stage.n_slots;
  d.max_batch_tokens = opt.max_batch_tokens;
  d.graphs = opt.graphs;
  d.gpu_layers = opt.gpu_layers;
  d.experts = opt.experts;
  d.cpu_rows = opt.cpu_rows;
  d.host_threads = opt.cpu.n_threads;
  d.kv_type_k = opt.cpu.stage.k_type();
  d.kv_type_v = opt.cpu.stage.v_type();
  d.override_hint = "-ngl";  // the coordinator has no --vram-budget
  d.log = [](const std::string& m) { std::fprintf(stderr, "coordinator: %s\n", m.c_str()); };
  gpu_ = open_cuda_stage(*file, ModelConfig::from_gguf(*file), d);
  grammar_ = link::grammar_support(*file);  // grammars sample on the host (host_sampled_rows.h)
}

InProcessLauncher::~InProcessLauncher() = default;

std::unique_ptr<HeadProcess> InProcessLauncher::launch(const std::string& coordinator_address, const std::string& secret) {
  Stage& stage = gpu_ ? *gpu_ : cpu_->stage();
  return std::make_unique<HeadThread>(stage, model_name_, opt_, coordinator_address, secret, grammar_);
}

}  // namespace pipellm::coord

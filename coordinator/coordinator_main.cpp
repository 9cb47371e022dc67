// pipellm-coordinator: loads the tokenizer, starts (or attaches to) the stages, serves gRPC and
// OpenAI-compatible HTTP. The same file with and without gRPC: the gRPC door is behind
// start_grpc() (serving_setup.h), which returns nullptr where this build has none.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "coordinator/coordinator_options.h"
#include "coordinator/inprocess_launcher.h"
#include "coordinator/link_backend.h"
#include "coordinator/metered_backend.h"
#include "coordinator/mpirun_launcher.h"
#include "coordinator/served_gpus.h"
#include "coordinator/serving_setup.h"
#include "engine/devices/device_stage.h"
#include "engine/gguf/gguf_file.h"
#include "engine/model/model_config.h"
#include "engine/pipeline/pipeline_config.h"
#include "engine/pipeline/plan_check.h"
#include "engine/pipeline/stage_factory.h"
#include "flags/sampler_flags.h"

namespace pipellm::coord {
namespace {

// The one global: set by SIGTERM/SIGINT, read by the main loop. Lock-free, so async-signal-safe.
std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void on_signal(int) { g_stop_requested.store(true); }

std::string default_stage_binary() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string dir(buf, static_cast<size_t>(n));
    dir = dir.substr(0, dir.find_last_of('/'));
    for (const std::string& c : {dir + "/pipellm-stage", dir + "/../stage_worker/pipellm-stage"}) {
      if (::access(c.c_str(), X_OK) == 0) return c;
    }
  }
  return "pipellm-stage";
}

std::string backend_kind(const CoordinatorOptions& o, const std::optional<PipelineConfig>& cfg) {
  return o.backend == "auto" ? (cfg ? "mpirun" : "inprocess") : o.backend;
}

// With --config, launched stages load the config's model: a different -m would give the front
// door another file's tokenizer (garbage text), so it is refused. In-process, -m replaces it.
void check_model_matches_config(const CoordinatorOptions& o, const std::optional<PipelineConfig>& cfg) {
  if (!cfg || o.model.empty() || backend_kind(o, cfg) == "inprocess") return;
  std::error_code e1, e2;
  const auto a = std::filesystem::weakly_canonical(o.model, e1), b = std::filesystem::weakly_canonical(cfg->model, e2);
  if (e1 || e2 ? o.model != cfg->model : a != b) {
    throw InvalidArgument("-m/--model '" + o.model + "' is not the model of --config " + o.config + " ('" + cfg->model +
                          "'), which the stages load: leave out -m, or give the config the model");
  }
}

// The server's sampling flags as the defaults of requests that leave a setting out.
void apply_sampling_flags(const flags::SamplingFlags& f, RequestLimits& lim) {
  lim.sampling = flags::apply_sampling_flags(f, lim.sampling);
  if (f.seed) {
    lim.random_seed = *f.seed < 0;
    if (*f.seed >= 0) lim.sampling.seed = static_cast<uint64_t>(*f.seed);
  }
  lim.ignore_eos = f.ignore_eos;
}

// The in-process backend's context per sequence: -c, else the config's, else the model's
// training context up to 4096 (llama-server's default; more than the model was trained on is
// only a warning). With -np N (llama-server's spelling) the N sequences share that context, each
// getting a 1/N share as llama-server's slots do; the config's context is already per sequence.
int inprocess_context(const CoordinatorOptions& o, const std::optional<PipelineConfig>& cfg, const GgufFile& model) {
  const int trained = ModelConfig::from_gguf(model).n_ctx_train;
  enum class From { Flag, Model, Config, Default };
  const From from = o.n_ctx > 0                       ? From::Flag
                    : o.ctx_from_model && trained > 0 ? From::Model
                    : cfg                             ? From::Config
                                                      : From::Default;
  int total = 4096;
  const char* source = "";
  switch (from) {
    case From::Flag:
      total = o.n_ctx;
      break;
    case From::Model:
      total = trained;
      source = " (the model's, -c 0)";
      break;
    case From::Config:
      total = cfg->context_length;
      source = " (the config's)";
      break;
    case From::Default:
      total = trained > 0 ? std::min(trained, 4096) : 4096;
      source = " (the model's, at most 4096)";
      break;
  }
  const bool shared = o.ctx_shared && o.n_slots > 1 && from != From::Config;
  const int n_ctx = shared ? total / o.n_slots : total;
  if (n_ctx < 1) {
    throw InvalidArgument("a context of " + std::to_string(total) + " tokens shared by -np " + std::to_string(o.n_slots) +
                          " sequences leaves none for each: raise -c, or use --slots for a context per sequence");
  }
  if (trained > 0 && n_ctx > trained) {
    spdlog::warn("coordinator: context {} is beyond the {} tokens the model was trained on; quality may drop", n_ctx,
                 trained);
  }
  if (shared) {
    spdlog::info("coordinator: context {} tokens{} shared by -np {} sequences: {} each (--slots N gives each the whole "
                 "context)",
                 total, source, o.n_slots, n_ctx);
  } else {
    spdlog::info("coordinator: context {} tokens{}", n_ctx, source);
  }
  return n_ctx;
}

// Refuses, before anything is launched, what the stages could not run (plan_check.h).
void check_before_launch(const CoordinatorOptions& o, const std::optional<PipelineConfig>& cfg, const GgufFile& model,
                         const std::string& kind, int n_ctx) {
  if (kind == "mpirun" && cfg) {
    const PartitionPlan plan = check_stage_plan(*cfg, model, o.n_ranks, physical_memory_bytes(), visible_gpu_count());
    spdlog::info("coordinator: plan checked: {} stage(s), balance {:.2f}", plan.stages.size(), plan.balance());
  } else if (kind == "inprocess") {
    const int n_slots = o.n_slots > 0 ? o.n_slots : cfg ? cfg->max_sequences : 4;
    check_inprocess_fit(model, n_ctx, n_slots, cfg ? cfg->kv_cache_type : KvType::F16, o.device, physical_memory_bytes(),
                        visible_gpu_count());
  }
}

// Whether `program` runs: a path that is executable, or a name found on $PATH.
bool runnable(const std::string& program) {
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "";
  for (size_t start = 0; start <= dirs.size();) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string dir = dirs.substr(start, end - start);
    if (!dir.empty() && ::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

// --device cuda... without --config: one GPU for the in-process backend (o.device becomes it), or
// several as a pipeline under mpirun (cfg and o.config become the written config). Flags of the
// in-process engine alone are refused by name for a pipeline.
ServedGpus place_gpus(CoordinatorOptions& o, std::optional<PipelineConfig>& cfg, const GgufFile& model, int n_ctx) {
  GpuPlacementRequest req = flags::placement_request(o.device, o.split);
  req.gpu_bytes = cuda_memory_bytes();
  GpuPipelineSettings s;
  s.model = o.model;
  s.n_ctx = n_ctx;
  s.n_slots = o.n_slots > 0 ? o.n_slots : 4;
  s.fit_slots = o.n_slots == 0;
  s.threads = o.n_threads;
  s.max_batch_tokens = o.max_batch_tokens > 0 ? o.max_batch_tokens : 512;
  s.kv_type_k = kv_type_of(o.kv_type_k.value_or(TensorType::F16));
  s.kv_type_v = kv_type_of(o.kv_type_v.value_or(TensorType::F16));
  s.experts = o.experts;
  s.cpu_rows = o.cpu_rows;
  const ModelConfig mc = ModelConfig::from_gguf(model);
  ServedGpus g = place_served_model(model, mc, req, s);
  spdlog::info("coordinator: GPUs: {}", g.reason);
  if (!g.config) {
    o.device = g.device;
    if (g.n_slots > 0) o.n_slots = g.n_slots;
    return g;
  }
  const std::string why = " runs the in-process engine on one GPU; the model is spread over several (" + g.reason + ")";
  if (o.backend != "auto" && o.backend != "mpirun") throw InvalidArgument("--backend " + o.backend + why);
  // -ngl 99 (every layer, as llama.cpp users type it) is what a pipeline does; fewer would stream.
  if (o.gpu_layers >= 0 && o.gpu_layers < mc.n_layer) {
    throw InvalidArgument("-ngl " + std::to_string(o.gpu_layers) + " (layers streamed)" + why + ": use -ngl all, or -sm none");
  }
  if (o.no_graphs) throw InvalidArgument("--no-graphs" + why);
  if (!runnable(o.mpirun)) {
    throw InvalidArgument("the model is spread over several GPUs (" + g.reason + "), one pipellm-stage each under '" +
                          o.mpirun + "', which is not installed here: install Open MPI (Debian: apt-get install "
                          "openmpi-bin), give --mpirun PATH, or use one GPU (-sm none)");
  }
  spdlog::info("coordinator: the stages' config, {}:\n{}", g.config_file->path(), g.config->to_yaml());
  cfg = g.config;
  o.config = g.config_file->path();
  o.device = "cpu";  // the in-process engine's: none runs here
  return g;
}

std::unique_ptr<HeadLauncher> make_launcher(const CoordinatorOptions& o, const std::optional<PipelineConfig>& cfg,
                                            const std::string& model_path, int n_ctx, std::string& kind) {
  kind = backend_kind(o, cfg);
  if (o.device != "cpu" && kind != "inprocess") {
    throw InvalidArgument("--device " + o.device + " is for the in-process backend (--model); the stages of --config " +
                          "name their own devices");
  }
  if (kind == "inprocess") {
    InProcessOptions io;
    io.cpu.stage.n_ctx = n_ctx;
    io.cpu.stage.n_slots = o.n_slots > 0 ? o.n_slots : cfg ? cfg->max_sequences : 4;
    io.cpu.n_threads = o.n_threads > 0 ? o.n_threads : cfg ? cfg->threads : 0;
    io.device = o.device;
    io.graphs = !o.no_graphs;
    io.gpu_layers = o.gpu_layers;
    io.experts = o.experts;
    io.cpu_rows = o.cpu_rows;
    io.debug_step_delay_ms = o.debug_step_delay_ms;
    if (cfg) {
      io.max_batch_tokens = cfg->max_batch_tokens;
      io.prefill_chunk = cfg->prefill_chunk;
      const CpuStageOptions kv = cpu_stage_options(*cfg);  // the config's KV cache types
      io.cpu.stage.kv_type = kv.kv_type;
      io.cpu.stage.kv_type_k = kv.kv_type_k;
      io.cpu.stage.kv_type_v = kv.kv_type_v;
    }
    if (o.kv_type_k) io.cpu.stage.kv_type_k = o.kv_type_k;
    if (o.kv_type_v) io.cpu.stage.kv_type_v = o.kv_type_v;
    if (o.max_batch_tokens > 0) io.max_batch_tokens = o.max_batch_tokens;
    return std::make_unique<InProcessLauncher>(model_path, io);
  }
  if (kind == "attach") return std::make_unique<AttachLauncher>();
  if (!cfg) throw InvalidArgument("--backend mpirun needs --config");
  MpirunOptions mo;
  mo.mpirun = o.mpirun;
  mo.n_ranks = o.n_ranks > 0 ? o.n_ranks : cfg->n_stages();
  mo.stage_binary = o.stage_binary.empty() ? default_stage_binary() : o.stage_binary;
  mo.config_path = o.config;
  mo.mpirun_args = o.mpirun_args;
  mo.stage_args = o.stage_args;
  return std::make_unique<MpirunLauncher>(mo);
}

// The secret stages started by hand (--backend attach) must give: --link-secret-file, else
// $PIPELLM_LINK_SECRET. Launched stages get a fresh one per launch instead (LinkBackend).
std::string attach_secret(const CoordinatorOptions& o) {
  std::string s;
  if (!o.link_secret_file.empty()) {
    std::ifstream in(o.link_secret_file);
    if (!in || !std::getline(in, s)) throw Error("--link-secret-file: cannot read '" + o.link_secret_file + "'");
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  } else {
    s = link::link_secret_from_env();
  }
  if (s.size() < 16) {
    throw InvalidArgument(std::string("--backend attach needs the link secret the stages will give (at least 16 ") +
                          "characters): --link-secret-file FILE or $" + link::kLinkSecretEnv +
                          ", and the same in the stages' $" + link::kLinkSecretEnv);
  }
  return s;
}

int run(const CoordinatorOptions& opts) {
  CoordinatorOptions o = opts;  // place_gpus may choose the device or write a config
  std::optional<PipelineConfig> cfg;
  if (!o.config.empty()) cfg = PipelineConfig::load(o.config);
  const std::string model_path = !o.model.empty() ? o.model : cfg->model;
  check_model_matches_config(o, cfg);

  spdlog::info("coordinator: tokenizer from {}", model_path);
  std::unique_ptr<ModelText> text;
  int n_ctx = 0;
  ServedGpus gpus;  // its config file outlives every launch of the stages
  {
    auto gguf = GgufFile::open(model_path);
    auto tok = Tokenizer::from_gguf(*gguf);
    auto tmpl = flags::resolve_chat_template(o.chat_template, tok->chat_template());
    if (!o.chat_template.empty()) spdlog::info("coordinator: chat template from --chat-template");
    text = std::make_unique<ModelText>(std::move(tok), std::move(tmpl));
    if (!cfg || backend_kind(o, cfg) == "inprocess") n_ctx = inprocess_context(o, cfg, *gguf);
    if (!cfg && o.device != "cpu" && o.backend != "attach") gpus = place_gpus(o, cfg, *gguf, n_ctx);
    check_before_launch(o, cfg, *gguf, backend_kind(o, cfg), n_ctx);
  }

  std::string kind;
  LinkBackendOptions bo;
  bo.listen = !o.link_listen.empty() ? o.link_listen : (cfg && !cfg->coordinator.empty()) ? cfg->coordinator : "127.0.0.1:0";
  require_loopback_or_allowed(bo.listen, o.serving.allow_remote, "link (--link or the config's `coordinator`)",
                              "the link has no TLS; a head proves itself with the launch's secret only");
  bo.handshake = std::chrono::milliseconds(o.link_handshake_ms);
  bo.restart_on_failure = o.restart_on_failure;
  bo.max_restarts = o.max_restarts;
  bo.startup_timeout = std::chrono::seconds(o.startup_timeout_s);
  bo.hang.floor = std::chrono::milliseconds(o.stage_hang_ms);
  bo.hang.first_step = std::chrono::milliseconds(o.stage_first_step_ms);
  auto launcher = make_launcher(o, cfg, model_path, n_ctx, kind);
  if (kind == "attach") {
    bo.secret = attach_secret(o);
    bo.restart_on_failure = true;  // stages started by hand may come and go
    bo.max_restarts = 1 << 30;
  }
  Metrics metrics;
  bo.on_stage_stats = [&metrics](const std::vector<link::StageStatsMsg>& s) { metrics.set_stage_stats(stage_stats_of(s)); };
  LinkBackend backend(std::move(launcher), bo);

  SchedulerOptions so;
  so.max_queue = o.max_queue;
  MeteredBackend metered(backend, metrics);  // tokens and latencies for /metrics
  RequestScheduler scheduler(metered, so);
  RequestLimits lim;
  lim.max_prompt_tokens = o.max_prompt_tokens;
  lim.max_tokens = o.max_tokens_limit;
  lim.default_max_tokens = o.default_max_tokens;
  apply_sampling_flags(o.sampling, lim);
  const ApiKeys keys = load_api_keys(o.serving);
  StreamLimiter streams(o.serving.max_streams_per_key);
  EmbeddingSetup es;  // --embeddings: the in-process CPU backend's side path (serving_setup.h)
  es.enabled = o.embeddings;
  es.pooling = o.pooling;
  es.backend = kind;
  es.device = o.device;
  es.model_path = model_path;
  es.n_ctx = n_ctx > 0 ? n_ctx : cfg ? cfg->context_length : 2048;
  es.n_threads = o.n_threads > 0 ? o.n_threads : cfg ? cfg->threads : 0;
  es.max_batch_tokens = o.max_batch_tokens > 0 ? o.max_batch_tokens : cfg ? cfg->max_batch_tokens : 512;
  const std::unique_ptr<Embedder> embedder = start_embeddings(es);
  const FrontDoorContext front{scheduler, *text, lim, keys, streams, metrics, embedder.get()};

  GrpcListen gl;
  gl.address = o.listen;
  gl.given = o.listen != kDefaultGrpcListen;
  gl.port_file = o.port_file;
  gl.backend = backend.describe();
  auto grpc = start_grpc(gl, o.serving, front);  // nullptr when off or not built
  auto set_health = [&](bool serving) {
    if (grpc) grpc->set_serving(serving);
  };
  auto http = start_http(o.serving, front);  // nullptr when off
  if (!grpc && !http) {
    throw InvalidArgument(std::string("nothing to serve: HTTP is off and ") +
                          (grpc_built() ? "so is gRPC (--listen off)" : "this build has no gRPC front door"));
  }
  metered.start(&scheduler);
  bool serving = false;
  while (!g_stop_requested.load()) {
    const bool now = scheduler.serving();
    if (now != serving) {
      set_health(now);
      spdlog::info("coordinator: health {}", now ? "SERVING" : "NOT_SERVING");
      serving = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  spdlog::info("coordinator: shutting down (no new requests; {} s for open streams)", o.shutdown_grace_s);
  scheduler.drain();
  set_health(false);
  if (!scheduler.wait_idle(std::chrono::seconds(o.shutdown_grace_s))) {
    spdlog::warn("coordinator: cancelling the requests still open");
    scheduler.cancel_all();
  }
  if (http) http->stop();
  if (grpc) grpc->stop();
  backend.stop();
  spdlog::info("coordinator: stopped");
  return 0;
}

}  // namespace
}  // namespace pipellm::coord

int main(int argc, char** argv) {
  const auto opt = pipellm::coord::parse_coordinator_options(argc, argv);
  spdlog::set_level(spdlog::level::from_str(opt.log_level));
  struct sigaction sa {};
  sa.sa_handler = pipellm::coord::on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return pipellm::coord::run(opt);
  } catch (const std::exception& e) {
    spdlog::critical("coordinator: {}", e.what());
    return 1;
  }
}

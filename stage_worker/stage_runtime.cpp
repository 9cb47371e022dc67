#include "stage_worker/stage_runtime.h"

#include <chrono>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include "engine/pipeline/partition_planner.h"
#include "base/error.h"
#include "stage_worker/mpi_transport.h"
#include "stage_worker/rank_heartbeat_setup.h"
#include "stage_worker/request_io.h"
#include "engine/link/serve_link.h"
#include "stage_worker/serve_head.h"
#include "stage_worker/stage_factory.h"
#ifdef PIPELLM_HAVE_NCCL
#include "stage_worker/ipc_transport.h"
#include "stage_worker/nccl_transport.h"
#endif

namespace pipellm {

namespace {

// True when every rank runs on the same host and names the same CUDA device (IPC's case).
bool one_gpu_for_all(const MpiSession& s, const PipelineConfig& c) {
  for (const auto& st : c.stages) {
    if (st.device_index != c.stages.front().device_index) return false;
  }
  char mine[256] = {};
  std::strncpy(mine, s.host().c_str(), sizeof mine - 1);
  std::vector<char> all(sizeof mine * static_cast<size_t>(s.size()));
  mpi_check(MPI_Allgather(mine, sizeof mine, MPI_CHAR, all.data(), sizeof mine, MPI_CHAR, MPI_COMM_WORLD),
            "MPI_Allgather of host names");
  for (int r = 0; r < s.size(); ++r) {
    if (std::strncmp(all.data() + r * sizeof mine, mine, sizeof mine) != 0) return false;
  }
  return true;
}

// GPU ranks: NCCL between GPUs, CUDA IPC between ranks sharing one GPU; CPU ranks: MPI.
std::unique_ptr<Transport> make_transport(const MpiSession& s, const PipelineConfig& c, int n_embd) {
  bool all_gpu = true;
  for (const auto& st : c.stages) all_gpu = all_gpu && st.is_gpu();
  if (c.transport == TransportKind::Mpi || c.n_stages() == 1 || (c.transport == TransportKind::Auto && !all_gpu)) {
    return std::make_unique<MpiTransport>(s, MPI_COMM_WORLD);
  }
  if (!all_gpu) throw ConfigError(c.source + ": transport: " + transport_name(c.transport) + " needs every stage on a cuda device");
  [[maybe_unused]] const int device = c.stages[static_cast<size_t>(s.rank())].device_index;
  const bool shared = one_gpu_for_all(s, c);
  if (c.transport == TransportKind::Ipc || (c.transport == TransportKind::Auto && shared)) {
    if (!shared) throw ConfigError(c.source + ": transport: ipc needs every stage on the same GPU of one host");
#ifdef PIPELLM_HAVE_NCCL
    const size_t slot = static_cast<size_t>(std::max(c.max_batch_tokens, c.max_sequences)) * static_cast<size_t>(n_embd);
    return std::make_unique<IpcTransport>(s, MPI_COMM_WORLD, device, slot);
#endif
  }
#ifdef PIPELLM_HAVE_NCCL
  if (shared) throw ConfigError(c.source + ": transport: nccl refuses two ranks on one GPU (use ipc or auto)");
  return std::make_unique<NcclTransport>(s, MPI_COMM_WORLD, device);
#else
  throw ConfigError(c.source + ": transport: GPU ranks need this pipellm-stage built with CUDA and NCCL");
#endif
}

std::unique_ptr<Tokenizer> try_tokenizer(const GgufFile& f, bool required) {
  if (!f.has("tokenizer.ggml.model") && !required) return nullptr;
  try {
    return Tokenizer::from_gguf(f);
  } catch (const Error&) {
    if (required) throw;
    return nullptr;
  }
}

void write_pid_file(const std::string& path) {
  std::ofstream f(path);
  f << ::getpid() << "\n";
  if (!f) throw Error("cannot write the pid file " + path);
}

// A CPU stage allocates its KV cache and scratch in host memory (the weights are mapped): a
// plan beyond this host's memory is a clear error here rather than a bare std::bad_alloc.
void check_host_memory(const PipelineConfig& cfg, const StageSpec& spec, const StagePlan& p, int rank) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (spec.is_gpu() || pages <= 0 || page <= 0) return;
  const double have = static_cast<double>(pages) * static_cast<double>(page);
  const double need = static_cast<double>(p.kv_bytes) + static_cast<double>(p.scratch_bytes);
  if (need <= have) return;
  char msg[256];
  std::snprintf(msg, sizeof msg, "rank %d needs %.1f GiB for its KV cache and scratch but this host has %.1f GiB; lower "
                "context_length or max_sequences", rank, need / 1073741824.0, have / 1073741824.0);
  throw ConfigError(cfg.source + ": " + msg);
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(const MpiSession& session, const WorkerOptions& o, std::unique_ptr<Transport>& transport) {
  const int rank = session.rank();
  const auto t0 = std::chrono::steady_clock::now();
  PipelineConfig cfg = PipelineConfig::load(o.config);
  if (!o.model.empty()) cfg.model = o.model;
  if (o.threads >= 0) cfg.threads = o.threads;
  if (session.size() != cfg.n_stages()) {
    throw ConfigError(cfg.source + ": stages: the config has " + std::to_string(cfg.n_stages()) +
                      " stages but mpirun started " + std::to_string(session.size()) + " ranks (use -np " +
                      std::to_string(cfg.n_stages()) + ")");
  }
  const auto file = GgufFile::open(cfg.model);
  const ModelConfig mc = ModelConfig::from_gguf(*file);
  const PartitionPlan plan = plan_partition(ModelSizes::from_gguf(*file, mc, cfg), PlanInput::from_config(cfg, mc));
  if (rank == 0 && (o.plan_only || !o.quiet)) {
    std::fprintf(o.plan_only ? stdout : stderr, "%s: %s\n%s", cfg.model.c_str(), mc.summary().c_str(), format_plan(plan).c_str());
  }
  if (o.plan_only) return 0;
  const bool has_input = o.have_prompt || !o.tokens.empty() || !o.requests.empty();
  const std::string serve_at = !o.coordinator.empty() ? o.coordinator : has_input ? std::string() : cfg.coordinator;
  if (!has_input && serve_at.empty()) {
    throw InvalidArgument("nothing to do: give --prompt, --tokens, --requests, --coordinator or --plan (" + cfg.source +
                          " has no coordinator: address)");
  }
  if (!o.pid_file.empty()) write_pid_file(o.pid_file + ".rank" + std::to_string(rank));

  const StageSpec& spec = cfg.stages[static_cast<size_t>(rank)];
  const StagePlan& mine = plan.stages[static_cast<size_t>(rank)];
  check_host_memory(cfg, spec, mine, rank);
  ThreadPool pool(cfg.threads);
  const auto log = [&](const std::string& m) {
    if (!o.quiet) std::fprintf(stderr, "pipellm-stage: rank %d: %s\n", rank, m.c_str());
  };
  auto stage = make_stage(StageSetup{*file, mc, cfg, mine}, spec, pool, log);
  transport = make_transport(session, cfg, mc.n_embd);
  StageRunner runner(*stage, *transport);
  StepTracker tracker;  // what this rank's heartbeat reports (serving only)
  // The last rank samples: it matches grammars against the model's tokens. Rank 0 knows the
  // same (one file, one config) and refuses grammar requests the tail could not serve.
  const bool tail = rank == session.size() - 1;
  const link::GrammarSupport grammar =
      tail || (rank == 0 && !serve_at.empty()) ? link::grammar_support(*file) : link::GrammarSupport{};
  if (tail) runner.set_grammar_vocabulary(grammar.vocab);
  if (o.fault_rank == rank) runner.set_fault(o.fault);
  runner.set_step_delay(std::chrono::milliseconds(o.step_delay_ms));
  if (!o.quiet) {
    std::fprintf(stderr, "pipellm-stage: rank %d (host %s, %s): layers [%d, %d)%s%s, loaded in %.2f s\n", rank,
                 session.host().c_str(), spec.device.c_str(), mine.first, mine.last, mine.has_embeddings ? " +embeddings" : "",
                 mine.has_output ? " +output" : "", since(t0));
  }
  mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier after loading");
  // Serving: rank 0 learns the ranks' pids and hosts, and every later rank beats to it, so that
  // the head can name a stuck rank (from /proc on its host, from the beats on any).
  const std::vector<RankProcess> ranks = serve_at.empty() ? std::vector<RankProcess>{} : gather_rank_processes(session);
  const RankHeartbeat heartbeat = serve_at.empty() ? RankHeartbeat{} : start_rank_heartbeat(session, ranks, tracker, o.quiet);
  if (!serve_at.empty()) runner.set_step_tracker(&tracker);

  if (rank != 0) {
    runner.run_follower();
    return 0;
  }
  if (!serve_at.empty()) {
    return serve_coordinator(runner, *stage, cfg, plan, serve_at, o.quiet, ranks, session.host(), grammar.refusal,
                             heartbeat.registry.get());
  }
  const bool need_text = o.have_prompt || !o.requests.empty();
  const auto tok = try_tokenizer(*file, o.have_prompt);
  if (need_text && !o.have_prompt && tok == nullptr) {
    // --requests may hold only token ids; a text request will say it needs the tokenizer.
  }
  const std::vector<Request> reqs = build_requests(o, tok.get(), stop_token_ids(*file, tok.get()));
  Scheduler sched(scheduler_options(cfg, *stage));
  for (const Request& r : reqs) sched.submit(r);
  ResultCollector results(reqs, tok.get(), o.logits, /*stream_text=*/o.json_out.empty());
  const HeadStats st = runner.run_head(sched, [&](const TokenEvent& e) { results.on_token(e); }, o.logits);
  if (o.json_out.empty()) {
    results.print_text();
  } else {
    results.write_json(o.json_out, st, session.size(), transport->name());
  }
  if (!o.quiet) {
    std::fprintf(stderr,
                 "pipellm-stage: %d rank%s (%s), %zu request%s, %lld tokens fed, %lld generated in %.3f s "
                 "(%.1f tokens/s, %lld steps, first token %.3f s, then %.3f ms/token)\n",
                 session.size(), session.size() == 1 ? "" : "s", transport->name(), reqs.size(), reqs.size() == 1 ? "" : "s",
                 static_cast<long long>(st.tokens_fed), static_cast<long long>(st.generated_tokens), st.seconds,
                 st.seconds > 0 ? static_cast<double>(st.generated_tokens) / st.seconds : 0.0,
                 static_cast<long long>(st.steps), st.first_token_seconds,
                 st.generated_tokens > 1 ? 1e3 * (st.seconds - st.first_token_seconds) / static_cast<double>(st.generated_tokens - 1) : 0.0);
  }
  return 0;
}

}  // namespace

int run_stage_worker(const MpiSession& session, const WorkerOptions& o) {
  std::unique_ptr<Transport> transport;
  try {
    return run(session, o, transport);
  } catch (const std::exception& e) {
    if (transport) transport->abort(e.what());
    session.abort(e.what());
  }
}

}  // namespace pipellm

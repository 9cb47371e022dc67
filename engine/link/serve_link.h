// Rank 0 serving the coordinator link through the pipeline runtime: Submit/Cancel from the link
// become Scheduler work (SchedulerBridge), StageRunner::serve_head runs the steps, tokens go back.
// The one serving loop of every head: `pipellm-stage --coordinator` (any number of ranks), the
// coordinator's in-process head and pipellm-link-head (one rank, CPU or GPU).
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "engine/link/coordinator_link.h"
#include "engine/runtime/grammar/token_vocabulary.h"
#include "engine/pipeline/scheduler.h"
#include "engine/pipeline/stage_runner.h"

namespace pipellm::link {

// The Hello of a head: model sizes from `head_stage` (the first stage), the context and the
// number of sequences the pipeline serves, the stage count and the plan as the coordinator shows it.
HelloMsg hello_for(const Stage& head_stage, const std::string& model_name, int n_ctx, int max_sequences, int n_stages,
                   const std::string& plan);

// What a sampling tail needs for structured output: the model's token texts (built from its
// tokenizer, once per process: ~70 ms for a 128k vocabulary), or why grammars are refused (a
// model without a usable tokenizer). Any tail can mask: a CPU tail samples on the host, a CUDA
// tail samples a grammar's sequences with the host sampler too (engine/cuda/host_sampled_rows.h).
struct GrammarSupport {
  std::shared_ptr<const grammar::TokenVocabulary> vocab;  // null when refused
  std::string refusal;                                     // empty when vocab is set
};
GrammarSupport grammar_support(const GgufFile& file);

struct ServeResult {
  HeadStats stats;
  std::string end_reason;  // "shutdown requested" or what happened to the link
  bool link_failed = false;
};

struct ServeOptions {
  // Every stage's statistics (rank order), reported as StageStats; the Progress heartbeat also
  // reads steps issued (rank 0) and done (the last rank) from them. Null: no statistics, and the
  // heartbeat says only that the head is alive.
  std::function<std::vector<StageStatsMsg>()> stats;
  // Which rank holds the pipeline up when steps are overdue (ProgressMsg::suspect); may be null.
  std::function<std::string()> diagnose;
  int n_stages = 1;
  std::chrono::milliseconds heartbeat{250};  // Progress every this often
  const std::atomic<bool>* stop = nullptr;   // serving ends when it becomes true
  // Why this pipeline's tail cannot sample with a grammar (SchedulerBridge::refuse_grammars):
  // such requests then fail by themselves instead of failing a step. Empty: it can.
  std::string grammar_refusal;
};

// Serves until the coordinator sends Shutdown, the link goes away, or `o.stop` becomes true; the
// followers get Shutdown either way. A ProgressWatch sends the heartbeat meanwhile.
// Pipeline errors throw (the caller aborts every rank).
ServeResult serve_link(StageRunner& runner, HeadLink& head, const SchedulerOptions& so, int n_vocab,
                       const ServeOptions& o = {});

}  // namespace pipellm::link

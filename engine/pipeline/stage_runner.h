// The per-rank loop of the pipeline, independent of the transport and of the backend.
//
// Rank r runs stage r. The head (rank 0) asks its Scheduler for micro-batches, runs its layers
// and sends [header, activations] to rank 1; every later rank receives, runs its layers and
// passes on; the tail (last rank) samples one token per logits row (Stage::step: on the device
// for GPU stages, a sequence's settings given by Stage::start_sequence) and sends a StepResult
// back to the head, which hands it to the scheduler. Every rank's only blocking call is a receive, and sends never wait
// for the receiver, so the ring head -> ... -> tail -> head cannot deadlock.
// With one rank the head is also the tail and nothing is sent.
//
// Every rank keeps running totals of its compute time (step and sampling; for a GPU stage that
// passes device rows on without waiting for its stream, the time to enqueue them) and transfer
// time (sends, and receiving activations once their header is in: waiting for work is neither) and
// appends them to each step it passes on; the head gathers them from the step results
// (stage_stats()), one step behind at most.
//
// The backend seam is Stage::step(): activation rows stay where the stage keeps them (device
// memory for CUDA stages) and go to the next rank through the transport straight from there
// (NCCL, CUDA IPC), or staged through the host when the transport moves only host memory.
// One runtime: `pipellm generate` (one rank), the coordinator's in-process head and
// `pipellm-stage` all run this class. Errors propagate as exceptions; the caller aborts the
// transport.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/model/stage.h"
#include "engine/pipeline/scheduler.h"
#include "engine/pipeline/step_tracker.h"
#include "engine/pipeline/transport.h"
#include "engine/runtime/grammar/token_vocabulary.h"

namespace pipellm {

struct HeadStats {
  int64_t steps = 0;
  int64_t tokens_fed = 0;        // prompt and generated tokens sent through the pipeline
  int64_t generated_tokens = 0;  // tokens sampled and reported
  double seconds = 0.0;          // wall time of run_head
  double first_token_seconds = -1.0;  // time to the first reported token
};

// A test-only fault: the rank throws, or dies by SIGKILL (as the OOM killer would), when it
// handles step `at_step`.
struct FaultInjection {
  enum class Kind { None, Throw, Kill } kind = Kind::None;
  int64_t at_step = 0;
};

class StageRunner {
 public:
  using TokenSink = std::function<void(const TokenEvent&)>;
  // Serving: may submit or cancel on the scheduler; may block up to `wait`; false stops.
  using PollFn = std::function<bool(std::chrono::milliseconds wait)>;

  // `stage` must be stage number transport.rank() of transport.size().
  StageRunner(Stage& stage, Transport& transport);

  void set_fault(const FaultInjection& f) { fault_ = f; }
  // The tail's token texts for sequences with a grammar (a step message carries only the
  // grammar's text; the sampling process matches it against its own model's vocabulary).
  void set_grammar_vocabulary(std::shared_ptr<const grammar::TokenVocabulary> v) { grammar_vocab_ = std::move(v); }
  // Tests: the head sleeps this long before each step (streams long enough to kill mid-way).
  void set_step_delay(std::chrono::milliseconds d) { step_delay_ = d; }
  // Told when this rank enters and leaves each step (its compute and sends; a follower's
  // receive of the step's activations too), for a thread that watches the rank (the rank
  // heartbeat). Not owned; null (the default): nothing is told.
  void set_step_tracker(StepTracker* t) { tracker_ = t; }

  // Head: runs until the scheduler has no work, then sends Shutdown down the pipeline.
  HeadStats run_head(Scheduler& scheduler, const TokenSink& sink, bool return_logits = false);
  // Head, serving requests that arrive while it runs (a coordinator link): calls `poll` between
  // steps, waiting up to `idle_wait` there only when the scheduler has nothing to do, and keeps
  // watching it while steps are in flight; never exits because it is idle. When `poll` returns
  // false, the steps in flight are drained and Shutdown goes down the pipeline.
  HeadStats serve_head(Scheduler& scheduler, const TokenSink& sink, const PollFn& poll,
                       std::chrono::milliseconds idle_wait = std::chrono::milliseconds(100));
  // Every other rank: until Shutdown arrives (forwarded to the next rank).
  void run_follower();

  // Head: the latest totals of every rank, in rank order (zeros until a rank has reported).
  const std::vector<RankStats>& stage_stats() const { return stats_; }

 private:
  bool is_tail() const { return transport_.rank() == transport_.size() - 1; }
  // Head helpers: issue every step the scheduler has now; hand one result to the scheduler;
  // send Shutdown down the pipeline.
  void issue_steps(Scheduler& scheduler, const TokenSink& sink, HeadStats& st, bool return_logits);
  void deliver(Scheduler& scheduler, const StepResult& r, const TokenSink& sink, HeadStats& st);
  void stop_followers();
  double head_elapsed() const;
  void maybe_fault(int64_t step) const;
  void apply_starts(const StepHeader& h);
  // The tail's part of a step: starts, the step with sampling, the result for the head.
  StepResult run_tail(const StepHeader& h);
  // This stage's output rows to `peer`, and the input rows of an n_tokens step from `peer`.
  void send_rows(int peer, size_t count);
  void recv_rows(int peer, int n_tokens, size_t count);
  RankStats& own() { return stats_[static_cast<size_t>(transport_.rank())]; }
  // This rank's totals as they stand, GPU memory read now.
  RankStats own_now();
  void merge(const std::vector<RankStats>& from);

  Stage& stage_;
  Transport& transport_;
  FaultInjection fault_;
  std::shared_ptr<const grammar::TokenVocabulary> grammar_vocab_;
  std::chrono::milliseconds step_delay_{0};
  StepTracker* tracker_ = nullptr;
  std::chrono::steady_clock::time_point head_t0_;
  StepOutput step_out_;
  std::vector<float> host_rows_;  // host staging for host-only transports
  std::vector<RankStats> stats_;  // per rank; a follower fills only its own
  std::chrono::steady_clock::time_point memory_read_{};  // when own device_bytes was last read
};

}  // namespace pipellm

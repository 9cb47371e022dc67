#include "engine/pipeline/stage_runner.h"

#include <chrono>
#include <csignal>
#include <thread>

#include "base/error.h"

namespace pipellm {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

StageRunner::StageRunner(Stage& stage, Transport& transport)
    : stage_(stage), transport_(transport) {
  const int r = transport.rank(), n = transport.size();
  if (stage.is_first() != (r == 0) || stage.is_last() != (r == n - 1)) {
    throw InvalidArgument("stage runner: rank " + std::to_string(r) + " of " + std::to_string(n) +
                          " got a stage that is " + (stage.is_first() ? "" : "not ") + "first and " +
                          (stage.is_last() ? "" : "not ") + "last");
  }
  stats_.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) stats_[static_cast<size_t>(i)].rank = i;
}

RankStats StageRunner::own_now() {
  // The device query (cudaMemGetInfo) costs more than a small step: twice a second is plenty.
  const auto now = Clock::now();
  if (now - memory_read_ > std::chrono::milliseconds(500)) {
    own().device_bytes = stage_.device_memory_bytes();
    memory_read_ = now;
  }
  return own();
}

void StageRunner::merge(const std::vector<RankStats>& from) {
  for (const RankStats& s : from) {
    // Only later ranks report through the pipeline; anything else is ignored, not trusted.
    if (s.rank > 0 && s.rank < transport_.size()) stats_[static_cast<size_t>(s.rank)] = s;
  }
}

void StageRunner::maybe_fault(int64_t step) const {
  if (fault_.kind == FaultInjection::Kind::None || step != fault_.at_step) return;
  if (fault_.kind == FaultInjection::Kind::Kill) std::raise(SIGKILL);
  throw Error("injected fault at step " + std::to_string(step));
}

void StageRunner::apply_starts(const StepHeader& h) {
  for (const SequenceStart& s : h.starts) {
    try {
      if (!s.sampling.grammar.empty() && !s.sampling.grammar_vocab) {
        if (!grammar_vocab_) throw InvalidArgument("a grammar needs the tail's vocabulary, which this rank was not given");
        SamplingSpec with_vocab = s.sampling;
        with_vocab.grammar_vocab = grammar_vocab_;
        stage_.start_sequence(s.slot, with_vocab, s.history);
        continue;
      }
      stage_.start_sequence(s.slot, s.sampling, s.history);
    } catch (const InvalidArgument& e) {
      throw Error("step " + std::to_string(h.step_id) + ": sequence " + std::to_string(s.seq_id) + ": " + e.what());
    }
  }
}

StepResult StageRunner::run_tail(const StepHeader& h) {
  apply_starts(h);
  stage_.step(h.batch, step_out_, h.return_logits);
  StepResult r;
  r.step_id = h.step_id;
  const Batch& b = h.batch;
  for (int i = 0; i < b.n_tokens(); ++i) {
    if (b.logits[static_cast<size_t>(i)]) r.slot.push_back(b.slot[static_cast<size_t>(i)]);
  }
  if (step_out_.tokens.size() != r.slot.size()) {
    throw Error("step " + std::to_string(h.step_id) + ": the stage sampled " + std::to_string(step_out_.tokens.size()) +
                " tokens for " + std::to_string(r.slot.size()) + " rows");
  }
  r.token = step_out_.tokens;
  r.logprob = step_out_.logprobs;
  r.top_logprobs = std::move(step_out_.top_logprobs);
  if (h.return_logits) {
    r.n_vocab = stage_.config().n_vocab;
    r.logits = std::move(step_out_.logits);
  }
  return r;
}

void StageRunner::send_rows(int peer, size_t count) {
  const ActivationRows rows = stage_.output_rows();
  if (transport_.moves(rows.space)) {
    transport_.send_activations(peer, rows, count);
    return;
  }
  host_rows_.resize(count);
  stage_.rows_to_host(rows, host_rows_.data(), count);
  transport_.send_activations(peer, {host_rows_.data(), MemorySpace::Host, nullptr}, count);
}

void StageRunner::recv_rows(int peer, int n_tokens, size_t count) {
  const ActivationRows rows = stage_.input_rows(n_tokens);
  if (transport_.moves(rows.space)) {
    transport_.recv_activations(peer, rows, count);
    return;
  }
  host_rows_.resize(count);
  transport_.recv_activations(peer, {host_rows_.data(), MemorySpace::Host, nullptr}, count);
  stage_.rows_from_host(host_rows_.data(), rows, count);
}

double StageRunner::head_elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - head_t0_).count();
}

void StageRunner::deliver(Scheduler& scheduler, const StepResult& r, const TokenSink& sink, HeadStats& st) {
  merge(r.stats);
  for (const TokenEvent& e : scheduler.complete(r)) {
    if (st.first_token_seconds < 0) st.first_token_seconds = head_elapsed();
    ++st.generated_tokens;
    sink(e);
  }
}

void StageRunner::issue_steps(Scheduler& scheduler, const TokenSink& sink, HeadStats& st, bool return_logits) {
  const int tail = transport_.size() - 1;
  while (auto h = scheduler.next_step()) {
    maybe_fault(h->step_id);
    if (step_delay_.count() > 0) std::this_thread::sleep_for(step_delay_);
    h->return_logits = return_logits;
    const StepTracker::Scope inside(tracker_, h->step_id);
    ++st.steps;
    st.tokens_fed += h->n_tokens();
    const auto t0 = Clock::now();
    ++own().steps;
    if (tail == 0) {
      StepResult r = run_tail(*h);
      own().step_seconds += since(t0);
      own_now();
      deliver(scheduler, r, sink, st);
      return;  // one step at a time: a serving head looks at its requests between steps
    }
    stage_.step(h->batch, step_out_);
    own().step_seconds += since(t0);
    own_now();
    h->width = stage_.config().n_embd;
    const auto t1 = Clock::now();
    transport_.send_message(1, h->encode());
    send_rows(1, static_cast<size_t>(h->n_tokens()) * static_cast<size_t>(h->width));
    own().transfer_seconds += since(t1);
  }
}

void StageRunner::stop_followers() {
  if (transport_.size() == 1) return;
  StepHeader bye;
  bye.kind = StepKind::Shutdown;
  transport_.send_message(1, bye.encode());
  transport_.flush();
}

HeadStats StageRunner::run_head(Scheduler& scheduler, const TokenSink& sink, bool return_logits) {
  if (transport_.rank() != 0) throw InvalidArgument("stage runner: run_head on rank " + std::to_string(transport_.rank()));
  head_t0_ = std::chrono::steady_clock::now();
  HeadStats st;
  const int tail = transport_.size() - 1;
  while (scheduler.has_work()) {
    issue_steps(scheduler, sink, st, return_logits);
    if (tail == 0) continue;
    if (scheduler.in_flight() == 0) {
      if (!scheduler.has_work()) break;
      throw Error("head: the scheduler has work but issued no step");  // a scheduler bug, never a hang
    }
    deliver(scheduler, StepResult::decode(transport_.recv_message(tail)), sink, st);
  }
  stop_followers();
  st.seconds = head_elapsed();
  return st;
}

HeadStats StageRunner::serve_head(Scheduler& scheduler, const TokenSink& sink, const PollFn& poll,
                                  std::chrono::milliseconds idle_wait) {
  if (transport_.rank() != 0) throw InvalidArgument("stage runner: serve_head on rank " + std::to_string(transport_.rank()));
  head_t0_ = std::chrono::steady_clock::now();
  HeadStats st;
  const int tail = transport_.size() - 1;
  // While steps are in flight, look at the requests this often.
  constexpr std::chrono::microseconds kResultWait(2000);
  while (poll(scheduler.has_work() || scheduler.in_flight() > 0 ? std::chrono::milliseconds(0) : idle_wait)) {
    issue_steps(scheduler, sink, st, false);
    if (tail == 0) continue;
    if (scheduler.in_flight() == 0) {
      if (scheduler.has_work()) throw Error("head: the scheduler has work but issued no step");
      continue;
    }
    if (transport_.poll_message(tail, kResultWait)) {
      deliver(scheduler, StepResult::decode(transport_.recv_message(tail)), sink, st);
    }
  }
  while (tail > 0 && scheduler.in_flight() > 0) {
    deliver(scheduler, StepResult::decode(transport_.recv_message(tail)), sink, st);
  }
  stop_followers();
  st.seconds = head_elapsed();
  return st;
}

void StageRunner::run_follower() {
  const int r = transport_.rank(), n = transport_.size();
  if (r == 0) throw InvalidArgument("stage runner: run_follower on the head rank");
  const int E = stage_.config().n_embd;
  for (;;) {
    StepHeader h = StepHeader::decode(transport_.recv_message(r - 1));
    if (h.kind == StepKind::Shutdown) {
      if (r + 1 < n) transport_.send_message(r + 1, h.encode());
      transport_.flush();
      return;
    }
    maybe_fault(h.step_id);
    const StepTracker::Scope inside(tracker_, h.step_id);
    if (h.width != E) {
      throw Error("step " + std::to_string(h.step_id) + ": activations of width " + std::to_string(h.width) +
                  " from rank " + std::to_string(r - 1) + ", this model's n_embd is " + std::to_string(E));
    }
    const auto t_recv = Clock::now();
    recv_rows(r - 1, h.n_tokens(), static_cast<size_t>(h.n_tokens()) * static_cast<size_t>(E));
    own().transfer_seconds += since(t_recv);
    const auto t0 = Clock::now();
    ++own().steps;
    if (r + 1 < n) {
      stage_.step(h.batch, step_out_);
      own().step_seconds += since(t0);
      h.stats.push_back(own_now());
      const auto t1 = Clock::now();
      transport_.send_message(r + 1, h.encode());
      send_rows(r + 1, static_cast<size_t>(h.n_tokens()) * static_cast<size_t>(E));
      own().transfer_seconds += since(t1);
    } else {
      StepResult res = run_tail(h);
      own().step_seconds += since(t0);
      res.stats = std::move(h.stats);
      res.stats.push_back(own_now());
      const auto t1 = Clock::now();
      transport_.send_message(0, res.encode());
      own().transfer_seconds += since(t1);
    }
  }
}

}  // namespace pipellm

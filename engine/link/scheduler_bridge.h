// The pipeline head's side of the coordinator link: Submit and Cancel messages become
// Scheduler::submit / cancel, token events go back as Token and Finished. Used by every head
// (serve_link: StageRunner::serve_head), for any number of ranks.
//
// A stop id ends its request with Finished{Stop} and is not sent as a Token, so the coordinator
// counts the same tokens whichever backend serves it. A bad request (ids
// outside the vocabulary, a prompt over the context, bad sampling values, an id already
// running) gets Error{id}; the pipeline goes on. With a stats source, poll() also sends the
// stages' StageStats (at most every `interval`, when they changed).
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/link/coordinator_link.h"
#include "engine/pipeline/scheduler.h"

namespace pipellm::link {

class SchedulerBridge {
 public:
  SchedulerBridge(Scheduler& scheduler, HeadLink& link, int n_vocab, int n_ctx);

  // StageRunner::serve_head's poll: handles every message that arrived (waiting up to `wait`
  // for the first). False once a Shutdown came or the coordinator went away; the open requests
  // are then cancelled (Finished{Cancelled} while the link still works).
  bool poll(std::chrono::milliseconds wait);
  // StageRunner's token sink.
  void on_token(const TokenEvent& e);
  // Where poll() reads the per-stage statistics it reports.
  using StatsSource = std::function<std::vector<StageStatsMsg>()>;
  void set_stats_source(StatsSource source, std::chrono::milliseconds interval = std::chrono::milliseconds(250));
  // Requests with a grammar get Error{id, why} here, before they reach the pipeline, where the
  // tail cannot mask (a model without a tokenizer); empty: grammars are served.
  void refuse_grammars(std::string why) { grammar_refusal_ = std::move(why); }

  // Why serving ended: "shutdown requested" or what happened to the link.
  const std::string& end_reason() const { return end_reason_; }
  bool link_failed() const { return link_failed_; }

 private:
  struct Live {
    int32_t prompt_tokens = 0;
    int32_t generated = 0;
    int32_t cached = 0;  // prompt tokens the slot held (TokenEvent::cached_tokens)
  };
  void submit(const SubmitRequest& r);
  void cancel(uint64_t id);
  void cancel_all();
  void end(const std::string& why, bool failed);
  void send(const HeadMessage& m);  // a lost link ends serving instead of throwing
  void report_stats();

  Scheduler& sched_;
  HeadLink& link_;
  int n_vocab_, n_ctx_;
  std::map<uint64_t, Live> live_;
  bool done_ = false;
  bool link_failed_ = false;
  std::string end_reason_;
  StatsSource stats_source_;
  std::string grammar_refusal_;
  std::chrono::milliseconds stats_interval_{250};
  std::chrono::steady_clock::time_point stats_sent_{};
  int64_t stats_steps_sent_ = 0;  // the steps of all stages in the last report
};

}  // namespace pipellm::link

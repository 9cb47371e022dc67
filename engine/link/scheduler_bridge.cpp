#include "engine/link/scheduler_bridge.h"

#include <variant>

#include "engine/pipeline/stage_runner.h"
#include "base/error.h"

namespace pipellm::link {

SchedulerBridge::SchedulerBridge(Scheduler& scheduler, HeadLink& link, int n_vocab, int n_ctx)
    : sched_(scheduler), link_(link), n_vocab_(n_vocab), n_ctx_(n_ctx) {}

void SchedulerBridge::send(const HeadMessage& m) {
  if (link_failed_) return;
  try {
    link_.send(m);
  } catch (const LinkError& e) {
    link_failed_ = true;
    end(std::string("lost the coordinator: ") + e.what(), true);
  }
}

void SchedulerBridge::end(const std::string& why, bool failed) {
  if (done_) return;
  done_ = true;
  link_failed_ = link_failed_ || failed;
  end_reason_ = why;
  cancel_all();
}

void SchedulerBridge::set_stats_source(StatsSource source, std::chrono::milliseconds interval) {
  stats_source_ = std::move(source);
  stats_interval_ = interval;
}

void SchedulerBridge::report_stats() {
  if (!stats_source_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - stats_sent_ < stats_interval_) return;
  const std::vector<StageStatsMsg> stats = stats_source_();
  int64_t steps = 0;
  for (const auto& s : stats) steps += s.steps;
  if (steps == stats_steps_sent_) return;  // nothing moved
  stats_sent_ = now;
  stats_steps_sent_ = steps;
  for (const auto& s : stats) send(s);
}

bool SchedulerBridge::poll(std::chrono::milliseconds wait) {
  if (done_) return false;
  report_stats();
  if (done_) return false;
  std::vector<CoordinatorMessage> msgs;
  try {
    msgs = link_.poll(static_cast<int>(wait.count()));
  } catch (const LinkError& e) {
    end(std::string("lost the coordinator: ") + e.what(), true);
    return false;
  }
  for (const auto& m : msgs) {
    if (done_) break;
    if (const auto* r = std::get_if<SubmitRequest>(&m)) {
      submit(*r);
    } else if (const auto* c = std::get_if<CancelRequest>(&m)) {
      cancel(c->id);
    } else {
      end("shutdown requested", false);
    }
  }
  return !done_;
}

void SchedulerBridge::submit(const SubmitRequest& r) {
  const auto reject = [&](const std::string& why) { send(ErrorMsg{static_cast<int64_t>(r.id), why}); };
  if (live_.count(r.id) != 0) return reject("request id " + std::to_string(r.id) + " is already running");
  if (r.prompt.empty()) return reject("empty prompt");
  if (static_cast<int>(r.prompt.size()) >= n_ctx_) {
    return reject("prompt of " + std::to_string(r.prompt.size()) + " tokens does not fit the context of " +
                  std::to_string(n_ctx_));
  }
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= n_vocab_) {
      return reject("prompt token " + std::to_string(i) + " has id " + std::to_string(r.prompt[i]) +
                    ", outside the vocabulary [0, " + std::to_string(n_vocab_) + ")");
    }
  }
  if (r.max_tokens < 0) return reject("max_tokens must be >= 0");
  if (!r.sampling.grammar.empty() && !grammar_refusal_.empty()) return reject(grammar_refusal_);
  if (r.sampling.top_logprobs < 0 || r.sampling.top_logprobs > kMaxTopLogprobs) {
    return reject("top_logprobs: must be in [0, " + std::to_string(kMaxTopLogprobs) + "] (got " +
                  std::to_string(r.sampling.top_logprobs) + ")");
  }
  const auto n_prompt = static_cast<int32_t>(r.prompt.size());
  if (r.max_tokens == 0) return send(FinishedMsg{r.id, FinishReason::Length, n_prompt, 0});
  Request q;
  q.id = static_cast<int64_t>(r.id);
  q.prompt = r.prompt;
  q.max_new_tokens = r.max_tokens;
  q.sampling = r.sampling;
  q.stop_tokens = r.stop_ids;
  try {
    sampler_params(q.sampling).validate();
    sched_.submit(std::move(q));
  } catch (const InvalidArgument& e) {
    return reject(e.what());
  }
  live_[r.id] = Live{n_prompt, 0};
}

void SchedulerBridge::cancel(uint64_t id) {
  const auto it = live_.find(id);
  if (it == live_.end()) return;  // finished already: its Finished is on the way
  const Live l = it->second;
  live_.erase(it);
  sched_.cancel(static_cast<int64_t>(id));
  send(FinishedMsg{id, FinishReason::Cancelled, l.prompt_tokens, l.generated, l.cached});
}

void SchedulerBridge::cancel_all() {
  std::map<uint64_t, Live> open;
  open.swap(live_);
  for (const auto& [id, l] : open) {
    sched_.cancel(static_cast<int64_t>(id));
    send(FinishedMsg{id, FinishReason::Cancelled, l.prompt_tokens, l.generated, l.cached});
  }
}

void SchedulerBridge::on_token(const TokenEvent& e) {
  const auto id = static_cast<uint64_t>(e.seq_id);
  const auto it = live_.find(id);
  if (it == live_.end()) return;
  it->second.cached = e.cached_tokens;
  if (e.finish == pipellm::FinishReason::Stop) {
    const Live l = it->second;
    live_.erase(it);
    send(FinishedMsg{id, FinishReason::Stop, l.prompt_tokens, l.generated, l.cached});
    return;
  }
  ++it->second.generated;
  const Live l = it->second;
  const bool last = e.finish != pipellm::FinishReason::None;  // Length, or the context is full
  if (last) live_.erase(it);
  send(TokenMsg{id, e.token, e.logprob, e.top_logprobs});
  if (last) send(FinishedMsg{id, FinishReason::Length, l.prompt_tokens, l.generated, l.cached});
}

}  // namespace pipellm::link

#include "engine/pipeline/scheduler.h"

#include <algorithm>
#include <numeric>

#include "base/error.h"

namespace pipellm {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "none";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Context: return "context";
  }
  return "?";
}

Scheduler::Scheduler(const SchedulerOptions& opt)
    : opt_(opt),
      slots_(static_cast<size_t>(std::max(opt.n_slots, 0))),
      kv_tokens_(slots_.size()),
      freed_at_(slots_.size(), 0) {
  if (opt.n_slots < 1 || opt.n_ctx < 2 || opt.micro_batches < 1 || opt.max_batch_tokens < 1 || opt.prefill_chunk < 1) {
    throw InvalidArgument("scheduler: slots, micro-batches, batch tokens and prefill chunk must be positive (ctx >= 2)");
  }
}

void Scheduler::submit(Request r) {
  const std::string who = "request " + std::to_string(r.id) + ": ";
  if (r.prompt.empty()) throw InvalidArgument(who + "empty prompt");
  if (static_cast<int>(r.prompt.size()) >= opt_.n_ctx) {
    throw InvalidArgument(who + "prompt of " + std::to_string(r.prompt.size()) + " tokens does not fit the context of " +
                          std::to_string(opt_.n_ctx));
  }
  if (r.max_new_tokens < 1) throw InvalidArgument(who + "max_new_tokens must be at least 1");
  queue_.push_back(std::move(r));
}

std::pair<int, int> Scheduler::pick_slot(const Request& r) const {
  const std::vector<int32_t>& prompt = r.prompt;
  int best = -1, best_len = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i]) continue;
    if (!opt_.reuse_prefix) return {static_cast<int>(i), 0};  // the first free slot
    const std::vector<int32_t>& kv = kv_tokens_[i];
    const size_t n = std::min(kv.size(), prompt.size());
    // The prompt's last token is always fed: its logits give the first generated token.
    int len = std::min(static_cast<int>(std::mismatch(kv.begin(), kv.begin() + static_cast<std::ptrdiff_t>(n),
                                                      prompt.begin()).first - kv.begin()),
                       static_cast<int>(prompt.size()) - 1);
    if (!r.sampling.cache_prompt || len < opt_.reuse_min || static_cast<int64_t>(kv.size()) - len > opt_.reuse_limit) {
      len = 0;
    }
    if (best < 0 || len > best_len || (len == best_len && freed_at_[i] < freed_at_[static_cast<size_t>(best)])) {
      best = static_cast<int>(i);
      best_len = len;
    }
  }
  return {best, best_len};
}

void Scheduler::admit() {
  while (!queue_.empty()) {
    const auto [slot, cached] = pick_slot(queue_.front());
    if (slot < 0) return;
    Seq q;
    q.req = std::move(queue_.front());
    queue_.pop_front();
    q.slot = slot;
    q.serial = ++next_serial_;
    q.reused = cached;
    q.n_fed = q.reused;
    kv_tokens_[static_cast<size_t>(slot)].resize(static_cast<size_t>(q.reused));
    reused_tokens_ += q.reused;
    slots_[static_cast<size_t>(slot)] = std::move(q);
    ++n_active_;
  }
}

void Scheduler::feed(Seq& s, int32_t t) {
  kv_tokens_[static_cast<size_t>(s.slot)].push_back(t);
  ++s.n_fed;
}

std::optional<StepHeader> Scheduler::next_step() {
  admit();
  if (static_cast<int>(in_flight_.size()) >= opt_.micro_batches || n_active_ == 0) return std::nullopt;

  StepHeader h;
  h.step_id = next_step_id_;
  std::vector<Row> rows;  // sequence of each logits row
  int budget = opt_.max_batch_tokens;

  auto start_if_needed = [&](Seq& s) {
    if (s.started) return;
    s.started = true;
    // The sampler's window as if the reused tokens had been fed.
    const int window = std::min(s.reused, std::max(0, s.req.sampling.penalty_last_n));
    const auto end = s.req.prompt.begin() + s.reused;
    h.starts.push_back({s.slot, s.req.id, s.req.sampling, std::vector<int32_t>(end - window, end)});
  };

  // Decode: sequences with a sampled token waiting, least recently served first.
  std::vector<Seq*> ready;
  for (auto& s : slots_) {
    if (s && prompt_done(*s) && !s->awaiting && s->next_token >= 0) ready.push_back(&*s);
  }
  std::stable_sort(ready.begin(), ready.end(), [](const Seq* a, const Seq* b) { return a->last_served < b->last_served; });
  const int cap = std::max(1, (n_active_ + opt_.micro_batches - 1) / opt_.micro_batches);
  int taken = 0;
  for (Seq* s : ready) {
    if (taken >= cap || budget == 0) break;
    h.batch.add(s->next_token, s->n_fed, s->slot, true);
    rows.push_back({s->slot, s->serial});
    feed(*s, s->next_token);
    s->next_token = -1;
    s->awaiting = true;
    s->last_served = ++serve_clock_;
    ++taken;
    --budget;
  }

  // Prefill: next chunk of each unfinished prompt, in slot order.
  for (auto& s : slots_) {
    if (budget == 0) break;
    if (!s || prompt_done(*s)) continue;
    start_if_needed(*s);
    const int n_prompt = static_cast<int>(s->req.prompt.size());
    const int n = std::min({opt_.prefill_chunk, budget, n_prompt - s->n_fed});
    for (int i = 0; i < n; ++i) {
      const int p = s->n_fed;
      const bool last = p + 1 == n_prompt;
      h.batch.add(s->req.prompt[static_cast<size_t>(p)], p, s->slot, last);
      if (last) rows.push_back({s->slot, s->serial});
      feed(*s, s->req.prompt[static_cast<size_t>(p)]);
    }
    if (prompt_done(*s)) s->awaiting = true;
    budget -= n;
  }

  if (h.batch.n_tokens() == 0) return std::nullopt;
  ++next_step_id_;
  in_flight_.push_back(h.step_id);
  expect_[h.step_id] = std::move(rows);
  return h;
}

std::vector<TokenEvent> Scheduler::complete(const StepResult& r) {
  if (in_flight_.empty() || in_flight_.front() != r.step_id) {
    throw Error("scheduler: result for step " + std::to_string(r.step_id) + " arrived out of order (expected " +
                (in_flight_.empty() ? std::string("none") : std::to_string(in_flight_.front())) + ")");
  }
  in_flight_.pop_front();
  const std::vector<Row> rows = std::move(expect_[r.step_id]);
  expect_.erase(r.step_id);
  if (r.token.size() != rows.size()) {
    throw Error("scheduler: step " + std::to_string(r.step_id) + " returned " + std::to_string(r.token.size()) +
                " tokens for " + std::to_string(rows.size()) + " logits rows");
  }
  std::vector<TokenEvent> events;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (r.slot[i] != rows[i].slot) {
      throw Error("scheduler: step " + std::to_string(r.step_id) + " row " + std::to_string(i) + " is for slot " +
                  std::to_string(r.slot[i]) + ", expected slot " + std::to_string(rows[i].slot));
    }
    auto& opt_seq = slots_[static_cast<size_t>(rows[i].slot)];
    if (!opt_seq || opt_seq->serial != rows[i].serial) continue;  // the sequence was cancelled
    Seq& s = *opt_seq;
    s.awaiting = false;
    TokenEvent e;
    e.seq_id = s.req.id;
    e.token = r.token[i];
    if (!r.logprob.empty()) e.logprob = r.logprob[i];
    if (!r.top_logprobs.empty()) e.top_logprobs = r.top_logprobs[i];
    e.index = s.n_generated++;
    e.cached_tokens = s.reused;
    if (r.n_vocab > 0 && !r.logits.empty()) {
      e.logits = r.logits.data() + i * static_cast<size_t>(r.n_vocab);
      e.n_vocab = r.n_vocab;
    }
    if (std::find(s.req.stop_tokens.begin(), s.req.stop_tokens.end(), e.token) != s.req.stop_tokens.end()) {
      e.finish = FinishReason::Stop;
    } else if (s.n_generated >= s.req.max_new_tokens) {
      e.finish = FinishReason::Length;
    } else if (s.n_fed >= opt_.n_ctx) {
      e.finish = FinishReason::Context;  // the token is reported but there is no room to feed it
    }
    if (e.finish == FinishReason::None) {
      s.next_token = e.token;
    } else {
      opt_seq.reset();
      freed_at_[static_cast<size_t>(rows[i].slot)] = ++serve_clock_;
      --n_active_;
    }
    events.push_back(e);
  }
  return events;
}

const std::vector<int32_t>& Scheduler::cached(int slot) const {
  if (slot < 0 || slot >= static_cast<int>(slots_.size())) throw InvalidArgument("scheduler: no slot " + std::to_string(slot));
  return kv_tokens_[static_cast<size_t>(slot)];
}

void Scheduler::set_cached(int slot, std::vector<int32_t> tokens) {
  if (slot < 0 || slot >= static_cast<int>(slots_.size()) || slots_[static_cast<size_t>(slot)]) {
    throw InvalidArgument("scheduler: slot " + std::to_string(slot) + " is not a free slot");
  }
  kv_tokens_[static_cast<size_t>(slot)] = std::move(tokens);
}

bool Scheduler::cancel(int64_t id) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->id == id) {
      queue_.erase(it);
      return true;
    }
  }
  for (auto& s : slots_) {
    if (s && s->req.id == id) {
      // Rows already sent still fill its cache (stages handle every step): kv_tokens_ stays.
      freed_at_[static_cast<size_t>(s->slot)] = ++serve_clock_;
      s.reset();
      --n_active_;
      return true;
    }
  }
  return false;
}

}  // namespace pipellm

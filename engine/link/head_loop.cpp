#include "engine/link/head_loop.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include "engine/model/batch.h"
#include "engine/runtime/sampler.h"
#include "engine/util/error.h"

namespace pipellm::link {

struct HeadLoop::Seq {
  SubmitRequest req;
  Sampler sampler;
  int slot = -1;
  int fed = 0;        // prompt tokens already through forward
  int pos = 0;        // next KV position to write
  int generated = 0;  // tokens sent
  int32_t last = -1;  // the token to feed next (decode phase)
  bool done = false;

  Seq(SubmitRequest r, const SamplerParams& p, int n_vocab) : req(std::move(r)), sampler(p, n_vocab) {
    for (int32_t t : req.prompt) sampler.accept(t);
  }
  bool prefilling() const { return fed < static_cast<int>(req.prompt.size()); }
};

HelloMsg hello_for(const Stage& model, const std::string& model_name, int n_stages, const std::string& plan) {
  HelloMsg h;
  const ModelConfig& c = model.config();
  h.model_name = model_name;
  h.arch = arch_name(c.arch);
  h.n_vocab = c.n_vocab;
  h.n_layer = c.n_layer;
  h.n_embd = c.n_embd;
  h.n_ctx = model.n_ctx();
  h.max_sequences = model.n_slots();
  h.n_stages = n_stages;
  h.plan = plan;
  return h;
}

HeadLoop::HeadLoop(Stage& model, HeadLink& link, const HeadLoopOptions& opt)
    : model_(model), link_(link), opt_(opt), slots_(static_cast<size_t>(model.n_slots())) {
  if (!model.is_first() || !model.is_last()) throw InvalidArgument("head loop: needs a whole-model stage");
  opt_.max_batch_tokens = std::max(1, opt_.max_batch_tokens);
  opt_.prefill_chunk = std::max(1, opt_.prefill_chunk);
  stats_.device = opt_.device;
}

void HeadLoop::report_stats() {
  const auto now = std::chrono::steady_clock::now();
  if (stats_.steps == stats_steps_sent_ || now - stats_sent_ < std::chrono::milliseconds(opt_.stats_interval_ms)) return;
  stats_sent_ = now;
  stats_steps_sent_ = stats_.steps;
  stats_.gpu_bytes = model_.device_memory_bytes();
  link_.send(stats_);
}

HeadLoop::~HeadLoop() = default;

void HeadLoop::run(const std::atomic<bool>* stop) {
  bool shutdown = false;
  while (!shutdown && !(stop && stop->load())) {
    const bool busy = !waiting_.empty() ||
                      std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s != nullptr; });
    for (const auto& m : link_.poll(busy ? 0 : opt_.idle_poll_ms)) {
      handle(m, shutdown);
      if (shutdown) break;
    }
    if (shutdown) break;
    admit();
    step();
    report_stats();
  }
  for (auto& s : slots_) {
    if (s) finish(*s, FinishReason::Cancelled);
  }
  while (!waiting_.empty()) {
    finish(*waiting_.front(), FinishReason::Cancelled);
    waiting_.pop_front();
  }
}

void HeadLoop::handle(const CoordinatorMessage& m, bool& shutdown) {
  if (const auto* r = std::get_if<SubmitRequest>(&m)) {
    submit(*r);
  } else if (const auto* c = std::get_if<CancelRequest>(&m)) {
    cancel(c->id);
  } else {
    shutdown = true;
  }
}

void HeadLoop::submit(const SubmitRequest& r) {
  const int n_vocab = model_.config().n_vocab;
  const auto reject = [&](const std::string& why) { link_.send(ErrorMsg{static_cast<int64_t>(r.id), why}); };
  if (r.prompt.empty()) return reject("empty prompt");
  if (static_cast<int>(r.prompt.size()) >= model_.n_ctx()) {
    return reject("prompt of " + std::to_string(r.prompt.size()) + " tokens does not fit the context of " +
                  std::to_string(model_.n_ctx()));
  }
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= n_vocab) {
      return reject("prompt token " + std::to_string(i) + " has id " + std::to_string(r.prompt[i]) +
                    ", outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
    }
  }
  if (r.max_tokens < 0) return reject("max_tokens must be >= 0");
  SamplerParams p = sampler_params(r.sampling);
  try {
    p.validate();
  } catch (const InvalidArgument& e) {
    return reject(e.what());
  }
  waiting_.push_back(std::make_unique<Seq>(r, p, n_vocab));
}

void HeadLoop::cancel(uint64_t id) {
  for (auto& s : slots_) {
    if (s && s->req.id == id) {
      finish(*s, FinishReason::Cancelled);
      s.reset();
      return;
    }
  }
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if ((*it)->req.id == id) {
      finish(**it, FinishReason::Cancelled);
      waiting_.erase(it);
      return;
    }
  }
}

void HeadLoop::admit() {
  for (size_t i = 0; i < slots_.size() && !waiting_.empty(); ++i) {
    if (slots_[i]) continue;
    auto s = std::move(waiting_.front());
    waiting_.pop_front();
    if (s->req.max_tokens == 0) {
      finish(*s, FinishReason::Length);
      --i;  // the slot is still free
      continue;
    }
    s->slot = static_cast<int>(i);
    slots_[i] = std::move(s);
  }
}

void HeadLoop::step() {
  Batch b;
  std::vector<Seq*> outputs;  // sequence of each logits row, in batch order
  // Running sequences first (one token each), then prompt chunks within the budget.
  for (auto& s : slots_) {
    if (!s || s->prefilling()) continue;
    b.add(s->last, s->pos, s->slot, true);
    outputs.push_back(s.get());
  }
  int budget = opt_.max_batch_tokens - b.n_tokens();
  for (auto& s : slots_) {
    if (!s || !s->prefilling() || budget <= 0) continue;
    const int n_prompt = static_cast<int>(s->req.prompt.size());
    const int n = std::min({opt_.prefill_chunk, n_prompt - s->fed, budget});
    for (int k = 0; k < n; ++k) {
      const bool last = s->fed + k + 1 == n_prompt;
      b.add(s->req.prompt[static_cast<size_t>(s->fed + k)], s->fed + k, s->slot, last);
      if (last) outputs.push_back(s.get());
    }
    budget -= n;
  }
  if (b.n_tokens() == 0) return;
  if (opt_.debug_step_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opt_.debug_step_delay_ms));
  const auto t0 = std::chrono::steady_clock::now();
  try {
    model_.forward(b, logits_);
  } catch (const std::exception& e) {
    fail_all(std::string("forward pass failed: ") + e.what());
    return;
  }
  ++stats_.steps;
  stats_.step_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Advance prefill counters (after the forward succeeded).
  for (int i = 0; i < b.n_tokens(); ++i) {
    auto& s = slots_[static_cast<size_t>(b.slot[static_cast<size_t>(i)])];
    if (s->prefilling()) {
      ++s->fed;
      s->pos = s->fed;
    }
  }
  const size_t V = static_cast<size_t>(model_.config().n_vocab);
  for (size_t row = 0; row < outputs.size(); ++row) {
    Seq& s = *outputs[row];
    if (s.last >= 0 && s.generated > 0) ++s.pos;  // the decode token just went in
    const int32_t tok = s.sampler.sample(logits_.data() + row * V);
    if (std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), tok) != s.req.stop_ids.end()) {
      finish(s, FinishReason::Stop);
      continue;
    }
    s.sampler.accept(tok);
    s.last = tok;
    ++s.generated;
    link_.send(TokenMsg{s.req.id, tok});
    if (s.generated >= s.req.max_tokens || s.pos >= model_.n_ctx()) finish(s, FinishReason::Length);
  }
  for (auto& s : slots_) {
    if (s && s->done) s.reset();
  }
}

void HeadLoop::finish(Seq& s, FinishReason reason) {
  if (s.done) return;
  s.done = true;
  link_.send(FinishedMsg{s.req.id, reason, static_cast<int32_t>(s.req.prompt.size()), s.generated});
}

void HeadLoop::fail_all(const std::string& why) {
  for (auto& s : slots_) {
    if (!s) continue;
    link_.send(ErrorMsg{static_cast<int64_t>(s->req.id), why});
    s.reset();
  }
}

}  // namespace pipellm::link

// The head rank's scheduler: continuous batching of sequences into micro-batches.
//
// - Requests wait in FIFO order for a free KV slot; a sequence joins at the next step boundary
//   and leaves (its slot freed) as soon as its last token comes back.
// - Up to `micro_batches` steps are in flight at once. A sequence in decode has at most one
//   token in flight (the next depends on it); the decoding sequences are spread over the
//   micro-batches (at most ceil(active / micro_batches) per step) so every stage has work.
// - A prompt is fed in chunks of at most `prefill_chunk` tokens; its chunks may be in flight
//   together because every stage processes steps in order (chunk k fills the KV cache before
//   chunk k+1 reads it). Only the prompt's last token asks for logits.
// - Each step holds at most `max_batch_tokens` tokens; decode tokens go first, then prefill.
// - Prompt caching (reuse_prefix, llama-server's cache_prompt): a slot's KV cache keeps the
//   tokens its last sequence fed. A request goes to the free slot whose cached tokens share the
//   longest prefix with its prompt (ties: the slot freed longest ago) and feeds only the rest
//   (at least its last token, whose logits start the generation): a chat's next turn re-reads
//   none of the history. Its sampler gets the skipped tokens' penalty window (SequenceStart).
//   A slot whose last sequence went more than reuse_limit tokens past the shared prefix serves
//   none of it.
//
// Pure bookkeeping: no transport, no model. The runtime asks next_step() for work, sends it down
// the pipeline, and hands each StepResult to complete().
#pragma once
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "engine/pipeline/step_message.h"

namespace pipellm {

struct SchedulerOptions {
  int n_slots = 1;
  int n_ctx = 2048;
  int micro_batches = 1;
  int max_batch_tokens = 512;
  int prefill_chunk = 256;
  // Reuse cached prefixes (above), where the slot's last sequence went at most reuse_limit tokens
  // past the shared prefix (ModelConfig::prefix_reuse_limit: sliding-window rings and recurrent
  // states; fit_to_stage sets both).
  bool reuse_prefix = false;
  int reuse_limit = std::numeric_limits<int>::max();
  // Shorter shared prefixes are fed again: they save little, and a reused prefix makes the
  // logits match a fresh run's within rounding only (prompts sharing a BOS stay bit-equal).
  int reuse_min = 0;
};

struct Request {
  int64_t id = 0;
  std::vector<int32_t> prompt;    // token ids, non-empty
  int max_new_tokens = 16;
  SamplingSpec sampling;
  std::vector<int32_t> stop_tokens;  // e.g. EOS; the stop token is reported, then the sequence ends
};

enum class FinishReason { None, Length, Stop, Context };
const char* finish_reason_name(FinishReason r);

struct TokenEvent {
  int64_t seq_id = 0;
  int32_t token = 0;
  int index = 0;                 // 0 for the first generated token
  FinishReason finish = FinishReason::None;  // not None on the sequence's last token
  const float* logits = nullptr;  // the row when the step returned logits, else null
  float logprob = std::numeric_limits<float>::quiet_NaN();  // when the sequence asked for it
  std::vector<TokenLogprob> top_logprobs{};  // when the sequence asked for alternatives
  int n_vocab = 0;
  int cached_tokens = 0;         // prompt tokens its slot's cache held (not fed)
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& opt);

  // Throws InvalidArgument (empty prompt, prompt longer than the context, max_new_tokens < 1).
  void submit(Request r);

  bool has_work() const { return !queue_.empty() || n_active_ > 0; }
  int in_flight() const { return static_cast<int>(in_flight_.size()); }
  int active() const { return n_active_; }
  int queued() const { return static_cast<int>(queue_.size()); }
  // Prompt tokens not fed because a slot held them (all requests so far).
  int64_t reused_tokens() const { return reused_tokens_; }
  // The tokens slot `slot`'s cache holds (positions 0..). A caller that runs one scheduler after
  // another over the same stage (a CLI chat's turns) hands them over with set_cached, before any
  // sequence uses the slot. Throws InvalidArgument for a bad slot or one in use.
  const std::vector<int32_t>& cached(int slot) const;
  void set_cached(int slot, std::vector<int32_t> tokens);

  // The next micro-batch, or nothing when no sequence can make progress now (everything is
  // waiting for results, or micro_batches steps are already in flight).
  std::optional<StepHeader> next_step();

  // Applies the tail's answer for a step (steps complete in the order they were issued).
  // Returns one event per sampled token of a live sequence.
  std::vector<TokenEvent> complete(const StepResult& r);

  // Ends request `id` whether it waits in the queue or runs: its slot is free for the next
  // step, and its rows still in flight are dropped when their results arrive (no events).
  // Every stage handles steps in order, so a sequence that reuses the slot starts after them.
  // False when no such request is queued or running.
  bool cancel(int64_t id);

 private:
  struct Seq {
    Request req;
    int slot = -1;
    int n_fed = 0;           // tokens sent down the pipeline (prompt, then generated)
    int n_generated = 0;
    int32_t next_token = -1; // sampled, not yet fed
    bool awaiting = false;   // a logits row for this sequence is in flight
    bool started = false;    // its SequenceStart has been sent
    uint64_t last_served = 0;
    uint64_t serial = 0;     // unique per admitted sequence: tells its rows from a successor's
    int reused = 0;          // prompt tokens its slot already held (not fed)
  };
  struct Row {
    int slot = 0;
    uint64_t serial = 0;
  };

  void admit();
  // The free slot for r and how many of its prompt's first tokens that slot's cache serves.
  std::pair<int, int> pick_slot(const Request& r) const;
  // Sends token t at position s.n_fed of s's slot (kv_tokens_ follows).
  void feed(Seq& s, int32_t t);
  bool prompt_done(const Seq& s) const { return s.n_fed >= static_cast<int>(s.req.prompt.size()); }

  SchedulerOptions opt_;
  std::deque<Request> queue_;
  std::vector<std::optional<Seq>> slots_;
  std::vector<std::vector<int32_t>> kv_tokens_;  // per slot: the tokens at positions 0.. of its cache
  std::vector<uint64_t> freed_at_;               // per slot: serve_clock_ when it was last freed
  int64_t reused_tokens_ = 0;
  int n_active_ = 0;
  int64_t next_step_id_ = 0;
  uint64_t serve_clock_ = 0;
  uint64_t next_serial_ = 0;
  std::deque<int64_t> in_flight_;  // step ids, oldest first
  std::map<int64_t, std::vector<Row>> expect_;  // step id -> the sequence of each logits row
};

}  // namespace pipellm

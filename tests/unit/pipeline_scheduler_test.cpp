// The head's scheduler (continuous batching, chunked prefill, micro-batches in flight) and the
// step messages' wire format.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "base/error.h"
#include "engine/pipeline/scheduler.h"

namespace pipellm {
namespace {

Request req(int64_t id, int prompt_len, int max_new, std::vector<int32_t> stop = {}) {
  Request r;
  r.id = id;
  for (int i = 0; i < prompt_len; ++i) r.prompt.push_back(10 + i);
  r.max_new_tokens = max_new;
  r.stop_tokens = std::move(stop);
  return r;
}

// The tail's answer: token `base + slot` for each logits row.
StepResult answer(const StepHeader& h, int32_t base = 500) {
  StepResult r;
  r.step_id = h.step_id;
  for (int i = 0; i < h.n_tokens(); ++i) {
    if (!h.batch.logits[static_cast<size_t>(i)]) continue;
    r.slot.push_back(h.batch.slot[static_cast<size_t>(i)]);
    r.token.push_back(base + h.batch.slot[static_cast<size_t>(i)]);
  }
  return r;
}

TEST(PipelineScheduler, ChunkedPrefillThenDecode) {
  SchedulerOptions o;
  o.n_slots = 1;
  o.n_ctx = 64;
  o.micro_batches = 3;
  o.max_batch_tokens = 8;
  o.prefill_chunk = 4;
  Scheduler s(o);
  s.submit(req(1, 10, 2));
  // 10 prompt tokens in chunks of 4, 4, 2, all in flight together; logits only on the last.
  auto a = s.next_step(), b = s.next_step(), c = s.next_step();
  ASSERT_TRUE(a && b && c);
  EXPECT_FALSE(s.next_step());  // 3 steps in flight
  EXPECT_EQ(a->batch.pos, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(b->batch.pos, (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(c->batch.pos, (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(a->n_tokens() + b->n_tokens() + c->n_tokens(), 10);
  EXPECT_EQ(c->batch.logits, (std::vector<uint8_t>{0, 1}));
  EXPECT_EQ(a->batch.n_outputs() + b->batch.n_outputs(), 0);
  ASSERT_EQ(a->starts.size(), 1u);  // the sequence starts with its first chunk only
  EXPECT_EQ(a->starts[0].seq_id, 1);
  EXPECT_TRUE(b->starts.empty());
  EXPECT_TRUE(s.complete(answer(*a)).empty());
  EXPECT_TRUE(s.complete(answer(*b)).empty());
  EXPECT_FALSE(s.next_step());  // waiting for the prompt's logits
  auto ev = s.complete(answer(*c));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].token, 500);
  EXPECT_EQ(ev[0].index, 0);
  EXPECT_EQ(ev[0].finish, FinishReason::None);
  // Decode: the sampled token goes in at position 10.
  auto d = s.next_step();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->batch.tokens, (std::vector<int32_t>{500}));
  EXPECT_EQ(d->batch.pos, (std::vector<int32_t>{10}));
  ev = s.complete(answer(*d));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].finish, FinishReason::Length);
  EXPECT_FALSE(s.has_work());
}

TEST(PipelineScheduler, DecodersSpreadOverMicroBatchesAndSlotsAreReused) {
  SchedulerOptions o;
  o.n_slots = 4;
  o.n_ctx = 64;
  o.micro_batches = 2;
  o.max_batch_tokens = 64;
  o.prefill_chunk = 64;
  Scheduler s(o);
  for (int i = 0; i < 5; ++i) s.submit(req(i, 3, i == 0 ? 1 : 3));
  auto p = s.next_step();  // all four admitted prompts in one step
  ASSERT_TRUE(p);
  EXPECT_EQ(p->n_tokens(), 12);
  EXPECT_EQ(p->batch.n_outputs(), 4);
  EXPECT_EQ(s.queued(), 1);
  auto ev = s.complete(answer(*p));
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0].finish, FinishReason::Length);  // request 0 wanted one token: slot 0 frees
  // Next step: request 4 joins in slot 0 (prefill) next to ceil(4 active / 2) = 2 decoders.
  auto q = s.next_step();
  ASSERT_TRUE(q);
  EXPECT_EQ(s.queued(), 0);
  int decoders = 0, prefill = 0;
  for (int i = 0; i < q->n_tokens(); ++i) (q->batch.slot[static_cast<size_t>(i)] == 0 ? prefill : decoders)++;
  EXPECT_EQ(decoders, 2);
  EXPECT_EQ(prefill, 3);
  ASSERT_EQ(q->starts.size(), 1u);
  EXPECT_EQ(q->starts[0].slot, 0);
  EXPECT_EQ(q->starts[0].seq_id, 4);
  auto r = s.next_step();  // the third decoder
  ASSERT_TRUE(r);
  EXPECT_EQ(r->n_tokens(), 1);
  EXPECT_EQ(r->batch.slot, (std::vector<int32_t>{3}));
  EXPECT_FALSE(s.next_step());
  EXPECT_THROW(s.complete(answer(*r)), Error);  // results must come back in order
}

TEST(PipelineScheduler, StopTokenAndContextEnd) {
  SchedulerOptions o;
  o.n_slots = 2;
  o.n_ctx = 6;
  Scheduler s(o);
  s.submit(req(1, 2, 10, {501}));  // slot 1 gets token 501 = stop
  s.submit(req(0, 4, 10));         // slot 0... (admitted first: slot 0 is request 1)
  auto h = s.next_step();
  ASSERT_TRUE(h);
  auto ev = s.complete(answer(*h));
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].seq_id, 1);
  EXPECT_EQ(ev[0].finish, FinishReason::None);  // 500 is not its stop token
  EXPECT_EQ(ev[1].seq_id, 0);
  EXPECT_EQ(ev[1].finish, FinishReason::None);
  // Request 0 (4 prompt tokens, ctx 6): tokens at positions 4 and 5, then the context is full.
  int rounds = 0;
  std::map<int64_t, FinishReason> end;
  while (s.has_work() && rounds++ < 10) {
    auto x = s.next_step();
    ASSERT_TRUE(x);
    for (const auto& e : s.complete(answer(*x, 500))) {
      if (e.finish != FinishReason::None) end[e.seq_id] = e.finish;
    }
  }
  EXPECT_EQ(end[0], FinishReason::Context);
  EXPECT_EQ(end[1], FinishReason::Context);  // 2 prompt + 4 generated fill ctx 6
}

TEST(PipelineScheduler, CancelDropsRowsInFlightAndFreesTheSlot) {
  SchedulerOptions o;
  o.n_slots = 1;
  o.n_ctx = 64;
  o.micro_batches = 2;
  o.prefill_chunk = 2;
  Scheduler s(o);
  s.submit(req(1, 4, 8));
  s.submit(req(2, 3, 2));
  s.submit(req(3, 2, 2));
  auto a = s.next_step();  // request 1's first prompt chunk
  auto b = s.next_step();  // its last chunk (asks for logits)
  ASSERT_TRUE(a && b);
  EXPECT_EQ(b->batch.n_outputs(), 1);
  EXPECT_TRUE(s.cancel(3));   // still queued
  EXPECT_FALSE(s.cancel(3));  // gone
  EXPECT_FALSE(s.cancel(99));
  EXPECT_TRUE(s.cancel(1));   // running, two steps in flight: slot 0 is free at once
  EXPECT_EQ(s.active(), 0);
  EXPECT_EQ(s.in_flight(), 2);
  // Request 2 takes slot 0 only when a step is free; request 1's rows give no events.
  EXPECT_TRUE(s.complete(answer(*a)).empty());
  auto c = s.next_step();
  ASSERT_TRUE(c);
  ASSERT_EQ(c->starts.size(), 1u);
  EXPECT_EQ(c->starts[0].seq_id, 2);
  EXPECT_EQ(c->starts[0].slot, 0);
  EXPECT_EQ(c->batch.pos.front(), 0);
  EXPECT_TRUE(s.complete(answer(*b)).empty());  // request 1's logits row: dropped
  auto d = s.next_step();  // request 2's last prompt token
  ASSERT_TRUE(d);
  EXPECT_TRUE(s.complete(answer(*c)).empty());  // no logits row in c
  auto ev = s.complete(answer(*d));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].seq_id, 2);
  EXPECT_EQ(ev[0].index, 0);
  auto e = s.next_step();
  ASSERT_TRUE(e);
  ev = s.complete(answer(*e));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].seq_id, 2);
  EXPECT_EQ(ev[0].finish, FinishReason::Length);
  EXPECT_FALSE(s.has_work());
}

// Runs the scheduler until nothing is left, answering every row with `base + slot`; the steps.
std::vector<StepHeader> drain(Scheduler& s, int32_t base = 500) {
  std::vector<StepHeader> steps;
  while (auto h = s.next_step()) {
    steps.push_back(*h);
    s.complete(answer(*h, base));
  }
  return steps;
}

Request with_prompt(int64_t id, std::vector<int32_t> prompt, int max_new) {
  Request r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.max_new_tokens = max_new;
  return r;
}

// Whole prompts in one step; prefixes reused (reuse_limit: as far as the slot's last sequence
// may have gone past them) or not.
SchedulerOptions caching(int n_slots, bool reuse, int reuse_limit = std::numeric_limits<int>::max()) {
  SchedulerOptions o;
  o.n_slots = n_slots;
  o.n_ctx = 64;
  o.max_batch_tokens = 64;
  o.prefill_chunk = 64;
  o.reuse_prefix = reuse;
  o.reuse_limit = reuse_limit;
  return o;
}

TEST(PipelineScheduler, APromptStartingWithASlotsTokensFeedsOnlyTheRest) {
  Scheduler s(caching(2, true));
  // A: 6 prompt tokens in slot 0, 3 generated (500, 500, 500): the cache holds the prompt and
  // the first two generated tokens (the last one is sampled, never fed): 8 tokens.
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6};
  s.submit(with_prompt(1, a, 3));
  drain(s);
  // B continues A's conversation: its first 8 tokens are in slot 0 (slot 1 holds nothing).
  std::vector<int32_t> b = {1, 2, 3, 4, 5, 6, 500, 500, 77, 78};
  s.submit(with_prompt(2, b, 1));
  const std::vector<StepHeader> steps = drain(s);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].batch.tokens, (std::vector<int32_t>{77, 78}));
  EXPECT_EQ(steps[0].batch.pos, (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(steps[0].batch.slot, (std::vector<int32_t>{0, 0}));
  ASSERT_EQ(steps[0].starts.size(), 1u);
  // The sampler's penalty window (64 tokens by default): the 8 tokens it was not fed.
  EXPECT_EQ(steps[0].starts[0].history, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 500, 500}));
  EXPECT_EQ(s.reused_tokens(), 8);
  // The same prompt again: everything cached, but its last token is fed for its logits; slot 0
  // now holds B's 10 prompt tokens.
  s.submit(with_prompt(3, b, 1));
  auto again = drain(s);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].batch.tokens, (std::vector<int32_t>{78}));
  EXPECT_EQ(again[0].batch.pos, (std::vector<int32_t>{9}));
  EXPECT_EQ(s.reused_tokens(), 17);
  // A diverging prompt reuses the common part only, and a short window is respected.
  std::vector<int32_t> c = {1, 2, 3, 9, 9};
  Request rc = with_prompt(4, c, 1);
  rc.sampling.penalty_last_n = 2;
  s.submit(rc);
  again = drain(s);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].batch.pos, (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(again[0].starts[0].history, (std::vector<int32_t>{2, 3}));
}

TEST(PipelineScheduler, PrefixReuseChoosesTheBestSlotThenTheLeastRecentlyFreed) {
  Scheduler s(caching(3, true));
  // Three conversations, one per slot (admitted together: slots 0, 1, 2 in order).
  s.submit(with_prompt(1, {1, 1, 1, 1}, 1));
  s.submit(with_prompt(2, {2, 2, 2, 2}, 1));
  s.submit(with_prompt(3, {3, 3, 3, 3}, 1));
  drain(s);
  // The one that shares most goes to its slot.
  s.submit(with_prompt(4, {2, 2, 2, 7}, 1));
  auto steps = drain(s);
  EXPECT_EQ(steps[0].batch.slot.front(), 1);
  EXPECT_EQ(steps[0].batch.pos.front(), 3);
  // Nothing shared: the slot freed longest ago (slot 0; slot 1 was just used, slot 2 after 0).
  s.submit(with_prompt(5, {9, 9}, 1));
  steps = drain(s);
  EXPECT_EQ(steps[0].batch.slot.front(), 0);
  EXPECT_EQ(steps[0].batch.pos.front(), 0);
  EXPECT_EQ(s.reused_tokens(), 3);
}

TEST(PipelineScheduler, ASlotThatWentTooFarPastThePrefixServesNone) {
  Scheduler s(caching(1, true, /*reuse_limit=*/0));  // recurrent layers: only a continuation of all the slot holds
  s.submit(with_prompt(1, {1, 2, 3}, 2));  // the slot holds 1 2 3 500
  drain(s);
  s.submit(with_prompt(2, {1, 2, 3, 9}, 1));  // shares 3, but the slot went 1 past them
  EXPECT_EQ(drain(s)[0].batch.pos.front(), 0);
  s.submit(with_prompt(3, {1, 2, 3, 9, 500, 7}, 1));  // continues all 4 tokens the slot holds (1 2 3 9)
  EXPECT_EQ(drain(s)[0].batch.pos.front(), 4);
  EXPECT_EQ(s.reused_tokens(), 4);
}

TEST(PipelineScheduler, ShortSharedPrefixesAreFedAgain) {
  SchedulerOptions o = caching(1, true);
  o.reuse_min = 4;
  Scheduler s(o);
  s.submit(with_prompt(1, {1, 2, 3, 4, 5, 6}, 1));  // the slot holds 1..6
  drain(s);
  s.submit(with_prompt(2, {1, 2, 3, 9}, 1));  // 3 shared: fewer than 4, fed whole
  EXPECT_EQ(drain(s)[0].batch.pos.front(), 0);
  s.submit(with_prompt(3, {1, 2, 3, 9, 7, 7}, 1));  // 4 shared (the slot now holds 1 2 3 9)
  EXPECT_EQ(drain(s)[0].batch.pos.front(), 4);
  EXPECT_EQ(s.reused_tokens(), 4);
}

TEST(PipelineScheduler, WithoutPrefixReuseEveryPromptIsFedWhole) {
  Scheduler s(caching(1, false));
  s.submit(with_prompt(1, {1, 2, 3}, 2));
  drain(s);
  s.submit(with_prompt(2, {1, 2, 3, 500, 9}, 1));
  const auto steps = drain(s);
  EXPECT_EQ(steps[0].batch.pos.front(), 0);
  EXPECT_EQ(steps[0].n_tokens(), 5);
  EXPECT_TRUE(steps[0].starts[0].history.empty());
  EXPECT_EQ(s.reused_tokens(), 0);
}

TEST(PipelineScheduler, RejectsBadRequests) {
  SchedulerOptions o;
  o.n_ctx = 8;
  Scheduler s(o);
  EXPECT_THROW(s.submit(req(1, 0, 4)), InvalidArgument);
  EXPECT_THROW(s.submit(req(1, 8, 4)), InvalidArgument);
  EXPECT_THROW(s.submit(req(1, 3, 0)), InvalidArgument);
}

TEST(PipelineMessages, HeaderRoundTrip) {
  StepHeader h;
  h.step_id = 42;
  h.width = 256;
  h.return_logits = true;
  SequenceStart st;
  st.slot = 3;
  st.seq_id = 99;
  st.sampling.temperature = 0.7f;
  st.sampling.top_k = 40;
  st.sampling.seed = 1234567890123ull;
  st.sampling.grammar = "root ::= [a-z]+ \"!\"";
  st.history = {7, 8, 9};
  h.starts.push_back(st);
  h.batch.add(5, 0, 3, false);
  h.batch.add(6, 1, 3, true);
  const StepHeader d = StepHeader::decode(h.encode());
  EXPECT_EQ(d.kind, StepKind::Forward);
  EXPECT_EQ(d.step_id, 42);
  EXPECT_EQ(d.width, 256);
  EXPECT_TRUE(d.return_logits);
  ASSERT_EQ(d.starts.size(), 1u);
  EXPECT_EQ(d.starts[0].slot, 3);
  EXPECT_EQ(d.starts[0].seq_id, 99);
  EXPECT_TRUE(d.starts[0].sampling == st.sampling);
  EXPECT_EQ(d.starts[0].history, st.history);
  EXPECT_EQ(d.batch.tokens, h.batch.tokens);
  EXPECT_EQ(d.batch.pos, h.batch.pos);
  EXPECT_EQ(d.batch.slot, h.batch.slot);
  EXPECT_EQ(d.batch.logits, h.batch.logits);
  EXPECT_EQ(d.batch.hidden, nullptr);
  EXPECT_TRUE(d.stats.empty());
}

TEST(PipelineMessages, StatsTravelWithHeaderAndResult) {
  const RankStats one{1, 10, 0.5, 0.01, 0};
  const RankStats two{2, 9, 0.25, 0.02, 123456789ull};
  StepHeader h;
  h.batch.add(5, 0, 0, true);
  h.stats = {one, two};
  const StepHeader dh = StepHeader::decode(h.encode());
  ASSERT_EQ(dh.stats.size(), 2u);
  EXPECT_TRUE(dh.stats[0] == one);
  EXPECT_TRUE(dh.stats[1] == two);
  StepResult r;
  r.stats = {two};
  const auto bytes = r.encode();
  const StepResult dr = StepResult::decode(bytes);
  ASSERT_EQ(dr.stats.size(), 1u);
  EXPECT_TRUE(dr.stats[0] == two);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    std::vector<uint8_t> t(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    EXPECT_THROW(StepResult::decode(t), Error) << "cut at " << cut;
  }
}

TEST(PipelineMessages, TopLogprobsTravelAndHostileCountsAreRefused) {
  StepHeader h;
  SequenceStart st;
  st.sampling.logprobs = true;
  st.sampling.top_logprobs = kMaxTopLogprobs;
  h.starts.push_back(st);
  h.batch.add(5, 0, 0, true);
  EXPECT_EQ(StepHeader::decode(h.encode()).starts.at(0).sampling.top_logprobs, kMaxTopLogprobs);
  h.starts[0].sampling.top_logprobs = kMaxTopLogprobs + 1;
  EXPECT_THROW(StepHeader::decode(h.encode()), Error);

  StepResult r;
  r.step_id = 3;
  r.slot = {0, 1};
  r.token = {11, 12};
  r.logprob = {-0.5f, std::nanf("")};
  r.top_logprobs = {{{11, -0.5f}, {4, -1.25f}}, {}};
  const auto bytes = r.encode();
  const StepResult d = StepResult::decode(bytes);
  EXPECT_EQ(d.top_logprobs, r.top_logprobs);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    std::vector<uint8_t> t(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    EXPECT_THROW(StepResult::decode(t), Error) << "cut at " << cut;
  }
  // One row's count over the cap: refused, not read.
  r.top_logprobs[1].assign(static_cast<size_t>(kMaxTopLogprobs) + 1, TokenLogprob{1, -2.0f});
  try {
    StepResult::decode(r.encode());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("top_logprobs.count"), std::string::npos) << e.what();
  }
  // Rows of alternatives that do not match the tokens.
  r.top_logprobs = {{}};
  EXPECT_THROW(StepResult::decode(r.encode()), Error);
}

TEST(PipelineMessages, ResultRoundTripAndCorruption) {
  StepResult r;
  r.step_id = 7;
  r.slot = {0, 2};
  r.token = {11, 12};
  r.n_vocab = 3;
  r.logits = {1, 2, 3, 4, 5, 6};
  const auto bytes = r.encode();
  const StepResult d = StepResult::decode(bytes);
  EXPECT_EQ(d.step_id, 7);
  EXPECT_EQ(d.slot, r.slot);
  EXPECT_EQ(d.token, r.token);
  EXPECT_EQ(d.logits, r.logits);
  for (size_t cut : {size_t{0}, size_t{3}, bytes.size() / 2, bytes.size() - 1}) {
    std::vector<uint8_t> t(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    EXPECT_THROW(StepResult::decode(t), Error) << "cut at " << cut;
  }
  auto extra = bytes;
  extra.push_back(0);
  EXPECT_THROW(StepResult::decode(extra), Error);
  EXPECT_THROW(StepHeader::decode(bytes), Error);  // wrong magic
}

}  // namespace
}  // namespace pipellm

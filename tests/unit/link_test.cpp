// The coordinator <-> head link: message round trips, a loopback session, and malformed
// input (bad frames, truncated payloads, random bytes), which must fail with a clear error.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "engine/gguf/gguf_writer.h"
#include "engine/link/coordinator_link.h"
#include "engine/link/progress_watch.h"
#include "engine/link/scheduler_bridge.h"
#include "engine/link/serve_link.h"
#include "tests/unit/test_data.h"

namespace pipellm::link {
namespace {

SubmitRequest sample_submit() {
  SubmitRequest s;
  s.id = 0x1234567890ull;
  s.prompt = {1, 2, 3, 40000, -1};
  s.sampling.temperature = 0.7f;
  s.sampling.top_k = 40;
  s.sampling.top_p = 0.9f;
  s.sampling.min_p = 0.05f;
  s.sampling.repeat_penalty = 1.1f;
  s.sampling.presence_penalty = 0.5f;
  s.sampling.frequency_penalty = 0.25f;
  s.sampling.penalty_last_n = 32;
  s.sampling.seed = 0xdeadbeefcafeull;
  s.sampling.chain = 0x321;
  s.sampling.logprobs = true;
  s.sampling.top_logprobs = 7;
  // Non-ASCII and a NUL byte: the grammar travels as bytes, not as a C string.
  s.sampling.grammar = std::string("root ::= \"{\" [a-z\u00e9]* \"}\"\n") + '\0' + "x";
  s.max_tokens = 17;
  s.stop_ids = {2, 7};
  return s;
}

std::vector<uint8_t> body_of(const std::vector<uint8_t>& frame) {
  return std::vector<uint8_t>(frame.begin() + kFrameHeaderBytes, frame.end());
}

TEST(LinkCodec, SubmitRoundTrip) {
  const SubmitRequest s = sample_submit();
  const auto body = body_of(encode(CoordinatorMessage{s}));
  const auto m = decode_coordinator_message(body.data(), body.size());
  ASSERT_TRUE(std::holds_alternative<SubmitRequest>(m));
  const auto& r = std::get<SubmitRequest>(m);
  EXPECT_EQ(r.id, s.id);
  EXPECT_EQ(r.prompt, s.prompt);
  EXPECT_EQ(r.sampling.temperature, s.sampling.temperature);
  EXPECT_EQ(r.sampling.top_k, s.sampling.top_k);
  EXPECT_EQ(r.sampling.top_p, s.sampling.top_p);
  EXPECT_EQ(r.sampling.min_p, s.sampling.min_p);
  EXPECT_EQ(r.sampling.repeat_penalty, s.sampling.repeat_penalty);
  EXPECT_EQ(r.sampling.presence_penalty, s.sampling.presence_penalty);
  EXPECT_EQ(r.sampling.frequency_penalty, s.sampling.frequency_penalty);
  EXPECT_EQ(r.sampling.penalty_last_n, s.sampling.penalty_last_n);
  EXPECT_EQ(r.sampling.seed, s.sampling.seed);
  EXPECT_EQ(r.sampling.chain, s.sampling.chain);
  EXPECT_EQ(r.sampling.logprobs, s.sampling.logprobs);
  EXPECT_EQ(r.sampling.top_logprobs, s.sampling.top_logprobs);
  EXPECT_EQ(r.sampling.grammar, s.sampling.grammar);
  EXPECT_EQ(r.max_tokens, s.max_tokens);
  EXPECT_EQ(r.stop_ids, s.stop_ids);
}

TEST(LinkCodec, HeadMessagesRoundTrip) {
  HelloMsg h;
  h.model_name = "tiny";
  h.arch = "llama";
  h.n_vocab = 32000;
  h.n_layer = 4;
  h.n_embd = 64;
  h.n_ctx = 512;
  h.max_sequences = 8;
  h.n_stages = 2;
  h.plan = "rank0:[0,2) rank1:[2,4)";
  h.secret = "0123456789abcdef0123456789abcdef";
  auto b = body_of(encode(HeadMessage{h}));
  auto m = decode_head_message(b.data(), b.size());
  const auto& hr = std::get<HelloMsg>(m);
  EXPECT_EQ(hr.secret, h.secret);
  EXPECT_EQ(hr.model_name, "tiny");
  EXPECT_EQ(hr.plan, h.plan);
  EXPECT_EQ(hr.n_ctx, 512);
  EXPECT_EQ(hr.max_sequences, 8);

  b = body_of(encode(HeadMessage{FinishedMsg{9, FinishReason::Length, 5, 6}}));
  m = decode_head_message(b.data(), b.size());
  EXPECT_EQ(std::get<FinishedMsg>(m).reason, FinishReason::Length);
  EXPECT_EQ(std::get<FinishedMsg>(m).generated_tokens, 6);

  b = body_of(encode(HeadMessage{ErrorMsg{-1, "rank 1 died"}}));
  m = decode_head_message(b.data(), b.size());
  EXPECT_EQ(std::get<ErrorMsg>(m).id, -1);
  EXPECT_EQ(std::get<ErrorMsg>(m).message, "rank 1 died");
}

TEST(LinkCodec, MalformedBodiesThrowLinkError) {
  const auto good = body_of(encode(CoordinatorMessage{sample_submit()}));
  // Every truncation of a valid Submit is an error naming the message.
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      decode_coordinator_message(good.data(), n);
      FAIL() << "truncated at " << n << " decoded";
    } catch (const LinkError& e) {
      EXPECT_NE(std::string(e.what()).find("link:"), std::string::npos);
    }
  }
  // Trailing bytes.
  auto longer = good;
  longer.push_back(0);
  EXPECT_THROW(decode_coordinator_message(longer.data(), longer.size()), LinkError);
  // A head message type sent the wrong way, and an unknown type.
  const uint8_t token_type[] = {static_cast<uint8_t>(MsgType::Token), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_THROW(decode_coordinator_message(token_type, sizeof token_type), LinkError);
  const uint8_t unknown[] = {200};
  try {
    decode_head_message(unknown, 1);
    FAIL();
  } catch (const LinkError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown message type 200"), std::string::npos);
  }
  // A prompt count far beyond the bytes present.
  std::vector<uint8_t> huge = {static_cast<uint8_t>(MsgType::Submit), 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f};
  try {
    decode_coordinator_message(huge.data(), huge.size());
    FAIL();
  } catch (const LinkError& e) {
    EXPECT_NE(std::string(e.what()).find("Submit.prompt"), std::string::npos) << e.what();
  }
  // Bad finish reason, bad protocol version.
  auto fin = body_of(encode(HeadMessage{FinishedMsg{1, FinishReason::Stop, 0, 0}}));
  fin[9] = 77;
  EXPECT_THROW(decode_head_message(fin.data(), fin.size()), LinkError);
  HelloMsg h;
  h.protocol_version = 99;
  auto hb = body_of(encode(HeadMessage{h}));
  EXPECT_THROW(decode_head_message(hb.data(), hb.size()), LinkError);
}

TEST(LinkCodec, TokenAlternativesRoundTripAndHostileCounts) {
  TokenMsg t{5, 42, -0.25f};
  t.top_logprobs = {{42, -0.25f}, {7, -1.5f}, {0, -2.0f}};
  auto b = body_of(encode(HeadMessage{t}));
  auto m = decode_head_message(b.data(), b.size());
  const auto& r = std::get<TokenMsg>(m);
  EXPECT_EQ(r.id, 5u);
  EXPECT_EQ(r.token, 42);
  EXPECT_EQ(r.logprob, -0.25f);
  EXPECT_EQ(r.top_logprobs, t.top_logprobs);
  // The most alternatives: kMaxTopLogprobs.
  t.top_logprobs.assign(static_cast<size_t>(kMaxTopLogprobs), TokenLogprob{1, -3.0f});
  b = body_of(encode(HeadMessage{t}));
  EXPECT_EQ(std::get<TokenMsg>(decode_head_message(b.data(), b.size())).top_logprobs.size(),
            static_cast<size_t>(kMaxTopLogprobs));
  const auto refused = [](const std::vector<uint8_t>& body, const std::string& field) {
    try {
      decode_head_message(body.data(), body.size());
      ADD_FAILURE() << field << " decoded";
    } catch (const LinkError& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  // A count over the cap is refused before anything is read for it (the count byte follows
  // type, id, token and logprob: 1 + 8 + 4 + 4).
  t.top_logprobs.clear();
  b = body_of(encode(HeadMessage{t}));
  ASSERT_EQ(b.size(), 18u);
  b[17] = static_cast<uint8_t>(kMaxTopLogprobs + 1);
  refused(b, "Token.top_logprobs");
  b[17] = 255;
  refused(b, "Token.top_logprobs");
  // A count the bytes do not hold, a positive log-probability, a negative id.
  b[17] = 2;
  refused(b, "Token.top_logprobs");
  t.top_logprobs = {{3, 0.5f}};
  b = body_of(encode(HeadMessage{t}));
  refused(b, "Token.top_logprobs.logprob");
  t.top_logprobs = {{-4, -1.0f}};
  b = body_of(encode(HeadMessage{t}));
  refused(b, "Token.top_logprobs.id");
  // A Submit asking for more than the cap, or a negative count.
  for (int32_t n : {kMaxTopLogprobs + 1, -1, 1 << 30}) {
    SubmitRequest s = sample_submit();
    s.sampling.top_logprobs = n;
    const auto sb = body_of(encode(CoordinatorMessage{s}));
    try {
      decode_coordinator_message(sb.data(), sb.size());
      ADD_FAILURE() << n << " decoded";
    } catch (const LinkError& e) {
      EXPECT_NE(std::string(e.what()).find("Submit.top_logprobs"), std::string::npos) << e.what();
    }
  }
}

TEST(LinkCodec, StageStatsRoundTripAndMalformed) {
  StageStatsMsg st;
  st.rank = 1;
  st.device = "cuda:0";
  st.steps = 1234;
  st.step_seconds = 0.125;
  st.transfer_seconds = 3.5e-4;
  st.gpu_bytes = 6000000000ull;
  const auto b = body_of(encode(HeadMessage{st}));
  EXPECT_EQ(b[0], static_cast<uint8_t>(MsgType::StageStats));
  const auto d = std::get<StageStatsMsg>(decode_head_message(b.data(), b.size()));
  EXPECT_EQ(d.rank, 1);
  EXPECT_EQ(d.device, "cuda:0");
  EXPECT_EQ(d.steps, 1234);
  EXPECT_EQ(d.step_seconds, 0.125);
  EXPECT_EQ(d.transfer_seconds, 3.5e-4);
  EXPECT_EQ(d.gpu_bytes, 6000000000ull);
  // Every truncation, and trailing bytes.
  for (size_t n = 0; n < b.size(); ++n) {
    EXPECT_THROW(decode_head_message(b.data(), n), LinkError) << "truncated at " << n;
  }
  auto longer = b;
  longer.push_back(0);
  EXPECT_THROW(decode_head_message(longer.data(), longer.size()), LinkError);
  // Values no stage can report: a negative rank or step count, a negative or NaN time.
  const auto expect_bad = [](StageStatsMsg m, const std::string& field) {
    const auto bad = body_of(encode(HeadMessage{m}));
    try {
      decode_head_message(bad.data(), bad.size());
      ADD_FAILURE() << field << " accepted";
    } catch (const LinkError& e) {
      EXPECT_NE(std::string(e.what()).find("StageStats." + field), std::string::npos) << e.what();
    }
  };
  StageStatsMsg m = st;
  m.rank = -1;
  expect_bad(m, "rank");
  m = st;
  m.steps = -5;
  expect_bad(m, "steps");
  m = st;
  m.step_seconds = -1.0;
  expect_bad(m, "step_seconds");
  m = st;
  m.transfer_seconds = std::nan("");
  expect_bad(m, "transfer_seconds");
  // A coordinator -> head decoder does not take it.
  EXPECT_THROW(decode_coordinator_message(b.data(), b.size()), LinkError);
}

TEST(LinkCodec, RandomBytesNeverCrash) {
  std::mt19937 rng(42);
  int errors = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> b(rng() % 64);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    if (!b.empty() && (i & 1)) b[0] = static_cast<uint8_t>(1 + rng() % 3 + (i & 2 ? 15 : 0));
    try {
      decode_coordinator_message(b.data(), b.size());
    } catch (const LinkError&) {
      ++errors;
    }
    try {
      decode_head_message(b.data(), b.size());
    } catch (const LinkError&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

const std::string kSecret = "00112233445566778899aabbccddeeff";

HelloMsg hello_with(const std::string& secret, const std::string& model = "m") {
  HelloMsg h;
  h.model_name = model;
  h.secret = secret;
  return h;
}

// A head connected (and accepted) on `coord`.
std::unique_ptr<HeadLink> connected_head(CoordinatorLink& coord, const HelloMsg& hello = hello_with(kSecret)) {
  std::unique_ptr<HeadLink> head;
  std::thread t([&] { head = HeadLink::connect(coord.address(), hello, 5000); });
  const auto h = coord.accept_head(hello.secret, 5000);
  t.join();
  EXPECT_TRUE(h.has_value());
  return head;
}

TEST(LinkSession, LoopbackRequestAndTokens) {
  CoordinatorLink coord("127.0.0.1:0");
  ASSERT_GT(coord.port(), 0);
  HelloMsg hello = hello_with(kSecret);
  hello.n_ctx = 128;
  hello.max_sequences = 4;
  std::unique_ptr<HeadLink> head;
  std::thread t([&] { head = HeadLink::connect(coord.address(), hello, 5000); });
  const auto h = coord.accept_head(kSecret, 5000);
  t.join();
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->max_sequences, 4);
  EXPECT_TRUE(coord.connected());

  EXPECT_TRUE(head->poll(0).empty());
  coord.send(sample_submit());
  coord.send(CancelRequest{5});
  coord.send(ShutdownRequest{});
  std::vector<CoordinatorMessage> got;
  for (int i = 0; i < 50 && got.size() < 3; ++i) {
    auto more = head->poll(100);
    got.insert(got.end(), more.begin(), more.end());
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(std::get<SubmitRequest>(got[0]).prompt, sample_submit().prompt);
  EXPECT_EQ(std::get<CancelRequest>(got[1]).id, 5u);
  EXPECT_TRUE(std::holds_alternative<ShutdownRequest>(got[2]));

  for (int i = 0; i < 100; ++i) head->send(TokenMsg{3, i});
  head->send(FinishedMsg{3, FinishReason::Stop, 5, 100});
  for (int i = 0; i < 100; ++i) {
    auto tm = coord.receive(5000);
    ASSERT_TRUE(tm);
    EXPECT_EQ(std::get<TokenMsg>(*tm).token, i);
  }
  auto fm = coord.receive(5000);
  ASSERT_TRUE(fm);
  EXPECT_EQ(std::get<FinishedMsg>(*fm).generated_tokens, 100);
  EXPECT_FALSE(coord.receive(10).has_value());

  head.reset();  // head goes away: the coordinator sees LinkClosed, not a hang
  EXPECT_THROW(coord.receive(5000), LinkClosed);
  EXPECT_FALSE(coord.connected());
  EXPECT_THROW(coord.send(CancelRequest{1}), LinkClosed);
}

// Writes raw bytes to the coordinator as a misbehaving head would (after its Hello).
void expect_malformed(const std::vector<uint8_t>& bytes, const std::string& expect) {
  CoordinatorLink coord("127.0.0.1:0");
  Fd fd = tcp_connect(HostPort::parse(coord.address()), 5000);
  const auto hello = encode(HeadMessage{hello_with(kSecret)});
  ASSERT_EQ(::send(fd.get(), hello.data(), hello.size(), MSG_NOSIGNAL), static_cast<ssize_t>(hello.size()));
  ASSERT_TRUE(coord.accept_head(kSecret, 5000));
  ASSERT_EQ(::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  try {
    coord.receive(5000);
    FAIL() << "no error for " << expect;
  } catch (const LinkError& e) {
    EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
  }
  EXPECT_FALSE(coord.connected());
  // The link accepts a well-behaved head afterwards.
  EXPECT_TRUE(connected_head(coord));
}

TEST(LinkSession, MalformedFramesAreClearErrors) {
  expect_malformed({0xff, 0xff, 0xff, 0xff, 1}, "exceeds the limit");
  expect_malformed({0, 0, 0, 0}, "length 0");
  expect_malformed({1, 0, 0, 0, 250}, "unknown message type 250");
  expect_malformed({3, 0, 0, 0, static_cast<uint8_t>(MsgType::Token), 1, 2}, "Token.id");
}

TEST(LinkSession, HeadSeesCoordinatorGoAway) {
  auto coord = std::make_unique<CoordinatorLink>("127.0.0.1:0");
  auto head = connected_head(*coord);
  ASSERT_TRUE(head);
  coord.reset();
  EXPECT_THROW(head->poll(5000), LinkClosed);
}

// Whether the coordinator closed `fd` within timeout_ms (EOF or reset; data is ignored).
bool closed_by_peer(const Fd& fd, int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    char buf[256];
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Whether the head's connection ends (LinkClosed) within timeout_ms.
bool head_dropped(HeadLink& head, int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  try {
    while (std::chrono::steady_clock::now() < until) head.poll(50);
  } catch (const LinkClosed&) {
    return true;
  }
  return false;
}

struct Refusals {
  std::vector<std::string> lines;
  bool any(const std::string& part) const {
    for (const auto& l : lines) {
      if (l.find(part) != std::string::npos) return true;
    }
    return false;
  }
};

// A head whose tail cannot mask (a model without a tokenizer) refuses grammar requests one by
// one, with the reason, before they reach the pipeline; requests without a grammar are taken as
// before.
TEST(LinkBridge, GrammarRequestsRefusedWhereTheTailCannotMask) {
  CoordinatorLink coord("127.0.0.1:0");
  const auto head = connected_head(coord);
  ASSERT_TRUE(head);
  SchedulerOptions so;
  so.n_slots = 2;
  so.n_ctx = 128;
  Scheduler sched(so);
  SchedulerBridge bridge(sched, *head, 100, 128);
  bridge.refuse_grammars("grammar: structured output needs the model's tokenizer");
  SubmitRequest with;
  with.id = 7;
  with.prompt = {1, 2, 3};
  with.max_tokens = 4;
  with.sampling.grammar = "root ::= \"x\"";
  coord.send(with);
  SubmitRequest without = with;
  without.id = 8;
  without.sampling.grammar.clear();
  coord.send(without);
  for (int i = 0; i < 20 && !sched.has_work(); ++i) ASSERT_TRUE(bridge.poll(std::chrono::milliseconds(100)));
  const auto m = coord.receive(5000);
  ASSERT_TRUE(m);
  const auto* e = std::get_if<ErrorMsg>(&*m);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->id, 7);
  EXPECT_EQ(e->message, "grammar: structured output needs the model's tokenizer");
  EXPECT_TRUE(sched.has_work());  // request 8
  EXPECT_FALSE(coord.receive(50).has_value());
}

// top_logprobs > 0 goes to the pipeline like any request: every tail lists alternatives (a CUDA
// tail samples such sequences with the host sampler).
TEST(LinkBridge, TopLogprobsRequestsReachThePipeline) {
  CoordinatorLink coord("127.0.0.1:0");
  const auto head = connected_head(coord);
  ASSERT_TRUE(head);
  SchedulerOptions so;
  so.n_slots = 2;
  so.n_ctx = 128;
  Scheduler sched(so);
  SchedulerBridge bridge(sched, *head, 100, 128);
  SubmitRequest with;
  with.id = 7;
  with.prompt = {1, 2, 3};
  with.max_tokens = 4;
  with.sampling.logprobs = true;
  with.sampling.top_logprobs = 3;
  coord.send(with);
  for (int i = 0; i < 20 && !sched.has_work(); ++i) ASSERT_TRUE(bridge.poll(std::chrono::milliseconds(100)));
  EXPECT_TRUE(sched.has_work());
  EXPECT_FALSE(coord.receive(50).has_value());  // no Error
}

// The tail's vocabulary, whatever device it samples on; a model without a tokenizer gets a
// refusal starting "grammar:" (so the HTTP door's 400 names that field) and no vocabulary.
TEST(LinkBridge, GrammarSupportFromTheTokenizer) {
  const auto f = GgufFile::open(test::model_path("tiny-llama-Q8_0"));
  const GrammarSupport g = grammar_support(*f);
  ASSERT_TRUE(g.vocab);
  EXPECT_EQ(g.refusal, "");
  EXPECT_GT(g.vocab->n_tokens(), 0);
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  const auto bytes = w.write_to_memory();
  const auto bare = GgufFile::parse(bytes.data(), bytes.size(), "no-tokenizer.gguf");
  const GrammarSupport none = grammar_support(*bare);
  EXPECT_FALSE(none.vocab);
  EXPECT_EQ(none.refusal.rfind("grammar: ", 0), 0u) << none.refusal;
}

TEST(LinkHandshake, SecretsAreFreshHex) {
  const std::string a = new_link_secret(), b = new_link_secret();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
  EXPECT_NE(a, b);
}

TEST(LinkHandshake, WrongOrMissingSecretIsRefusedAndTheLaunchedHeadServes) {
  CoordinatorLink coord("127.0.0.1:0");
  Refusals r;
  coord.on_refused([&](const std::string& l) { r.lines.push_back(l); });
  // Three impostors connect first: no secret, a wrong one, and one that sends a Token first.
  auto no_secret = HeadLink::connect(coord.address(), hello_with("", "fake1"), 5000);
  auto wrong = HeadLink::connect(coord.address(), hello_with("ffffffffffffffffffffffffffffffff", "fake2"), 5000);
  Fd rude = tcp_connect(HostPort::parse(coord.address()), 5000);
  const auto tok = encode(HeadMessage{TokenMsg{1, 2}});
  ASSERT_EQ(::send(rude.get(), tok.data(), tok.size(), MSG_NOSIGNAL), static_cast<ssize_t>(tok.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::unique_ptr<HeadLink> head;
  std::thread t([&] { head = HeadLink::connect(coord.address(), hello_with(kSecret, "real"), 5000); });
  const auto h = coord.accept_head(kSecret, 5000);
  t.join();
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->model_name, "real");
  EXPECT_TRUE(head_dropped(*no_secret, 2000));
  EXPECT_TRUE(head_dropped(*wrong, 2000));
  EXPECT_TRUE(closed_by_peer(rude, 2000));
  EXPECT_TRUE(r.any("no secret")) << ::testing::PrintToString(r.lines);
  EXPECT_TRUE(r.any("the wrong secret")) << ::testing::PrintToString(r.lines);
  EXPECT_TRUE(r.any("sent Token before Hello")) << ::testing::PrintToString(r.lines);
  EXPECT_TRUE(r.any("from 127.0.0.1:")) << ::testing::PrintToString(r.lines);
  // The real head is the one served.
  coord.send(CancelRequest{9});
  std::vector<CoordinatorMessage> got;
  for (int i = 0; i < 50 && got.empty(); ++i) got = head->poll(100);
  ASSERT_EQ(got.size(), 1u);
  head->send(TokenMsg{9, 5});
  auto m = coord.receive(5000);
  ASSERT_TRUE(m && std::holds_alternative<TokenMsg>(*m));
  EXPECT_THROW(coord.accept_head("", 10), InvalidArgument);
}

TEST(LinkHandshake, IdleConnectionDoesNotBlockTheHeadAndIsDroppedAtTheDeadline) {
  CoordinatorLink coord("127.0.0.1:0", std::chrono::milliseconds(300));
  Refusals r;
  coord.on_refused([&](const std::string& l) { r.lines.push_back(l); });
  // Alone, an idle connection is dropped when its handshake time is up.
  Fd idle = tcp_connect(HostPort::parse(coord.address()), 5000);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(coord.accept_head(kSecret, 1000).has_value());
  EXPECT_TRUE(closed_by_peer(idle, 100));
  EXPECT_TRUE(r.any("no Hello within 300 ms")) << ::testing::PrintToString(r.lines);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(3000));
  // An idle connection ahead of the head does not delay it (the handshake is long here).
  CoordinatorLink slow("127.0.0.1:0", std::chrono::milliseconds(60000));
  Fd idle2 = tcp_connect(HostPort::parse(slow.address()), 5000);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto t1 = std::chrono::steady_clock::now();
  std::unique_ptr<HeadLink> head;
  std::thread t([&] { head = HeadLink::connect(slow.address(), hello_with(kSecret), 5000); });
  const auto h = slow.accept_head(kSecret, 5000);
  t.join();
  ASSERT_TRUE(h.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::milliseconds(2000));
  EXPECT_TRUE(closed_by_peer(idle2, 1000));  // dropped: this launch has its head
}

TEST(LinkHandshake, OneHeadPerLaunchAndStaleConnectionsAreRefused) {
  CoordinatorLink coord("127.0.0.1:0");
  Refusals r;
  coord.on_refused([&](const std::string& l) { r.lines.push_back(l); });
  auto head = connected_head(coord);
  ASSERT_TRUE(head);
  // A second connection, even with the right secret, is dropped while the head serves.
  auto second = HeadLink::connect(coord.address(), hello_with(kSecret, "second"), 5000);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  coord.refuse_newcomers();
  EXPECT_TRUE(head_dropped(*second, 2000));
  EXPECT_TRUE(r.any("a head is already connected")) << ::testing::PrintToString(r.lines);
  EXPECT_TRUE(coord.connected());
  head->send(TokenMsg{1, 2});
  EXPECT_TRUE(coord.receive(5000).has_value());
  // The next launch (a new secret): a connection still holding the old launch's secret is refused.
  coord.disconnect();
  auto stale = HeadLink::connect(coord.address(), hello_with(kSecret, "stale"), 5000);
  const std::string next = new_link_secret();
  std::unique_ptr<HeadLink> head2;
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    head2 = HeadLink::connect(coord.address(), hello_with(next, "next"), 5000);
  });
  const auto h = coord.accept_head(next, 5000);
  t.join();
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->model_name, "next");
  EXPECT_TRUE(head_dropped(*stale, 2000));
  EXPECT_TRUE(r.any("the wrong secret")) << ::testing::PrintToString(r.lines);
}

// Issue 21 item 4: the head's heartbeat. Progress round-trips and refuses negative counts or
// times; the watch reports steps in flight with nothing back (waiting), the head inside one of
// its own steps (busy), and the step estimate from the head's share and the round trips.
TEST(LinkCodec, ProgressRoundTripAndMalformed) {
  ProgressMsg p;
  p.steps_issued = 12;
  p.steps_done = 10;
  p.waiting_seconds = 1.5;
  p.busy_seconds = 0.25;
  p.step_seconds = 0.02;
  p.suspect = "rank 1 (pid 7) is stopped";
  const auto b = body_of(encode(HeadMessage{p}));
  const auto d = std::get<ProgressMsg>(decode_head_message(b.data(), b.size()));
  EXPECT_EQ(d.steps_issued, 12);
  EXPECT_EQ(d.steps_done, 10);
  EXPECT_EQ(d.waiting_seconds, 1.5);
  EXPECT_EQ(d.busy_seconds, 0.25);
  EXPECT_EQ(d.step_seconds, 0.02);
  EXPECT_EQ(d.suspect, p.suspect);
  ProgressMsg bad = p;
  bad.steps_done = -1;
  auto bb = body_of(encode(HeadMessage{bad}));
  EXPECT_THROW(decode_head_message(bb.data(), bb.size()), LinkError);
  bad = p;
  bad.waiting_seconds = std::nan("");
  bb = body_of(encode(HeadMessage{bad}));
  try {
    decode_head_message(bb.data(), bb.size());
    FAIL() << "a NaN time was accepted";
  } catch (const LinkError& e) {
    EXPECT_NE(std::string(e.what()).find("Progress.waiting_seconds"), std::string::npos) << e.what();
  }
}

TEST(LinkProgress, WatchReportsWaitingBusyAndStepTime) {
  CoordinatorLink coord("127.0.0.1:0");
  auto head = connected_head(coord);
  ASSERT_TRUE(head);
  using Clock = ProgressWatch::Clock;
  using std::chrono::milliseconds;
  ProgressWatch watch(*head, 2, milliseconds(50), [] { return std::string("rank 1 (pid 9) is stopped"); });
  const auto t0 = Clock::now();
  watch.enter_poll(0, 0, 0.0, t0);
  EXPECT_EQ(watch.snapshot(t0).waiting_seconds, 0.0);
  watch.leave_poll(t0);
  // The head spends 10 ms on its share of step 1 and sends it on.
  EXPECT_NEAR(watch.snapshot(t0 + milliseconds(10)).busy_seconds, 0.010, 1e-6);
  watch.enter_poll(1, 0, 0.010, t0 + milliseconds(10));
  auto s = watch.snapshot(t0 + milliseconds(30));
  EXPECT_EQ(s.busy_seconds, 0.0);
  EXPECT_NEAR(s.waiting_seconds, 0.020, 1e-6);
  EXPECT_NEAR(s.step_seconds, 0.020, 1e-6);  // 2 ranks x the head's 10 ms
  // Its result comes back 50 ms later: nothing in flight, a 50 ms round trip measured.
  watch.enter_poll(1, 1, 0.010, t0 + milliseconds(60));
  s = watch.snapshot(t0 + milliseconds(70));
  EXPECT_EQ(s.waiting_seconds, 0.0);
  EXPECT_NEAR(s.step_seconds, 0.050, 1e-6);
  EXPECT_EQ(s.steps_issued, 1);
  EXPECT_EQ(s.steps_done, 1);
  // Step 2 goes out and never comes back: the head keeps polling, waiting grows.
  watch.enter_poll(2, 1, 0.020, t0 + milliseconds(80));
  watch.leave_poll(t0 + milliseconds(80));
  watch.enter_poll(2, 1, 0.020, t0 + milliseconds(82));
  EXPECT_NEAR(watch.snapshot(t0 + milliseconds(2080)).waiting_seconds, 2.0, 1e-6);
  // The thread sends it, with the suspect once overdue.
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    auto m = coord.receive(100);
    if (!m) continue;
    if (const auto* p = std::get_if<ProgressMsg>(&*m)) seen = p->waiting_seconds > 0.5 && p->suspect == "rank 1 (pid 9) is stopped";
  }
  EXPECT_TRUE(seen) << "no overdue Progress with the suspect arrived";
}

TEST(LinkAddress, Parse) {
  EXPECT_EQ(HostPort::parse("127.0.0.1:5000").port, 5000);
  EXPECT_EQ(HostPort::parse(":7").host, "127.0.0.1");
  EXPECT_THROW(HostPort::parse("nope"), InvalidArgument);
  EXPECT_THROW(HostPort::parse("h:99999"), InvalidArgument);
  EXPECT_THROW(HostPort::parse("h:12a"), InvalidArgument);
  EXPECT_THROW(tcp_connect(HostPort::parse("127.0.0.1:1"), 100), LinkError);
}

}  // namespace
}  // namespace pipellm::link

// End to end: pipellm-coordinator (in-process CPU backend) + 16 concurrent streaming clients
// (greedy and seeded sampling with every sampling parameter); results compared with the
// single-process reference loop and with `pipellm generate`; text and token-id prompts alike;
// stop strings; cancellation, deadlines, a full queue; a table of bad requests; the CLI client.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include "coordinator/text_stream.h"
#include "engine/cpu/cpu_model.h"
#include "engine/gguf/gguf_file.h"
#include "engine/runtime/generator.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/coordinator/coordinator_process.h"
#include "tests/coordinator/serving_cases.h"

namespace pipellm::test {
namespace {

namespace v1 = pipellm::v1;
constexpr const char* kModel = "tiny-llama-Q8_0";
constexpr int kCtx = 512;

class Serving : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    coord_ = new CoordinatorProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx",
                                     std::to_string(kCtx), "--slots", "4", "--threads", "1", "--max-queue", "64"});
    ASSERT_TRUE(coord_->wait_health("SERVING", 30000)) << coord_->log();
  }
  static void TearDownTestSuite() {
    delete coord_;
    coord_ = nullptr;
  }
  static CoordinatorProcess* coord_;
};
CoordinatorProcess* Serving::coord_ = nullptr;

template <typename T>
bool to_default(T& field, T value) {
  if (field == value) return false;
  field = value;
  return true;
}

// The cases are worth comparing: each sampling parameter, set back to its default (the seed:
// changed) in the cases where it is not, changes the reference output of at least one of them;
// the penalties in greedy cases and in sampled ones.
TEST(ServingCases, EverySamplingParameterChangesSomeOutput) {
  CpuModelOptions mo;
  mo.n_threads = 1;
  mo.stage.n_ctx = kCtx;
  auto model = CpuModel::open(model_path(kModel), mo);
  auto tok = Tokenizer::from_gguf(model->file());
  const auto cases = cases16();
  std::vector<std::vector<int32_t>> base;
  for (const auto& c : cases) base.push_back(reference(*model, *tok, c));
  struct Param {
    const char* name;
    bool sampled_only;                 // no effect on greedy decoding
    std::function<bool(Case&)> alter;  // false: the case has the default already
  };
  const std::vector<Param> params = {
      {"temperature", true, [](Case& c) { return to_default(c.temperature, 0.0f); }},
      {"top_k", true, [](Case& c) { return to_default(c.top_k, 0); }},
      {"top_p", true, [](Case& c) { return to_default(c.top_p, 1.0f); }},
      {"min_p", true, [](Case& c) { return to_default(c.min_p, 0.0f); }},
      {"seed", true, [](Case& c) { return ++c.seed, true; }},
      {"repetition_penalty", false, [](Case& c) { return to_default(c.repeat_penalty, 1.0f); }},
      {"presence_penalty", false, [](Case& c) { return to_default(c.presence_penalty, 0.0f); }},
      {"frequency_penalty", false, [](Case& c) { return to_default(c.frequency_penalty, 0.0f); }},
      {"penalty_last_n", false, [](Case& c) { return to_default(c.penalty_last_n, 64); }},
  };
  for (const bool greedy : {true, false}) {
    for (const auto& p : params) {
      if (greedy && p.sampled_only) continue;
      int set = 0, changed = 0;
      for (size_t i = 0; i < cases.size(); ++i) {
        if ((cases[i].temperature == 0.0f) != greedy) continue;
        Case c = cases[i];
        if (!p.alter(c)) continue;
        ++set;
        if (reference(*model, *tok, c) != base[i]) ++changed;
      }
      EXPECT_GT(changed, 0) << p.name << " in " << (greedy ? "greedy" : "sampled") << " cases: set in " << set
                            << ", changes none of them";
    }
  }
}

TEST_F(Serving, ConcurrentStreamsMatchTheSingleProcessEngine) {
  expect_concurrent_streams_match(*coord_, model_path(kModel), kCtx);
}

// The prompt as text and as token ids (the server's Tokenize: BOS as the model asks, the same
// ids as the reference's and the CLI's tokenizer) give the same ids, served and from
// `pipellm generate -p` / `--ids-file`.
TEST_F(Serving, TextAndTokenPromptsMatchGenerateCli) {
  auto file = GgufFile::open(model_path(kModel));
  const auto tok = Tokenizer::from_gguf(*file);
  const auto cases = cases16();
  for (const size_t i : {size_t{2}, size_t{8}, size_t{11}, size_t{15}}) {  // greedy and sampled, with penalties
    const Case& c = cases[i];
    SCOPED_TRACE("case " + std::to_string(i) + ": " + c.prompt);
    grpc::ClientContext ctx;
    v1::TokenizeRequest tr;
    v1::TokenizeResponse tres;
    tr.set_text(c.prompt);
    ASSERT_TRUE(coord_->stub().Tokenize(&ctx, tr, &tres).ok());
    const std::vector<int32_t> prompt(tres.ids().begin(), tres.ids().end());
    EXPECT_EQ(prompt, tok->encode(c.prompt, true, false));
    EXPECT_EQ(prompt.front(), tok->bos_id());
    const auto text = generate(coord_->stub(), request_of(c));
    ASSERT_TRUE(text.status.ok()) << text.status.error_message();
    auto req = request_of(c);
    req.mutable_tokens()->mutable_ids()->Assign(prompt.begin(), prompt.end());
    const auto ids = generate(coord_->stub(), req);
    ASSERT_TRUE(ids.status.ok()) << ids.status.error_message();
    EXPECT_EQ(ids.final.usage().prompt_tokens(), static_cast<int>(prompt.size()));
    EXPECT_EQ(text.final.usage().prompt_tokens(), static_cast<int>(prompt.size()));
    EXPECT_EQ(static_cast<int>(text.ids.size()), c.max_tokens);
    EXPECT_EQ(ids.ids, text.ids);
    EXPECT_EQ(cli_generate(model_path(kModel), kCtx, c), text.ids) << "pipellm generate -p";
    EXPECT_EQ(cli_generate(model_path(kModel), kCtx, c, &prompt), text.ids) << "pipellm generate --ids-file";
  }
}

TEST_F(Serving, StopStringEndsTheStream) {
  Case c{"Once upon a time", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0, 40};
  const auto full = generate(coord_->stub(), request_of(c));
  ASSERT_TRUE(full.status.ok());
  ASSERT_GT(full.text.size(), 12u);
  const std::string stop = full.text.substr(8, 3);
  auto req = request_of(c);
  req.add_stop(stop);
  const auto cut = generate(coord_->stub(), req);
  ASSERT_TRUE(cut.status.ok()) << cut.status.error_message();
  EXPECT_EQ(cut.final.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(cut.final.stop_string(), stop);
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(stop)));
}

TEST_F(Serving, TokenizeDetokenizeAndInfo) {
  grpc::ClientContext c1;
  v1::TokenizeRequest tr;
  v1::TokenizeResponse tres;
  tr.set_text("Hello world");
  ASSERT_TRUE(coord_->stub().Tokenize(&c1, tr, &tres).ok());
  ASSERT_GT(tres.ids_size(), 1);
  EXPECT_EQ(tres.ids_size(), tres.pieces_size());
  grpc::ClientContext c2;
  v1::DetokenizeRequest dr;
  v1::DetokenizeResponse dres;
  for (int i = 1; i < tres.ids_size(); ++i) dr.add_ids(tres.ids(i));  // without BOS
  ASSERT_TRUE(coord_->stub().Detokenize(&c2, dr, &dres).ok());
  EXPECT_EQ(dres.text(), "Hello world");
  grpc::ClientContext c3;
  v1::ModelInfo info;
  ASSERT_TRUE(coord_->stub().GetModelInfo(&c3, v1::ModelInfoRequest{}, &info).ok());
  EXPECT_EQ(info.architecture(), "llama");
  EXPECT_EQ(info.context_length(), kCtx);
  EXPECT_EQ(info.max_sequences(), 4);
  EXPECT_TRUE(info.serving());
}

struct BadCase {
  std::string name;
  v1::GenerateRequest req;
  grpc::StatusCode code;
  std::string message;  // a substring of the status message
};

std::vector<BadCase> bad_cases() {
  std::vector<BadCase> v;
  auto text = [](const std::string& t) {
    v1::GenerateRequest r;
    r.set_text(t);
    return r;
  };
  v.push_back({"empty prompt", text(""), grpc::StatusCode::INVALID_ARGUMENT, "prompt.text: empty"});
  v.push_back({"no prompt", v1::GenerateRequest{}, grpc::StatusCode::INVALID_ARGUMENT, "prompt: missing"});
  auto r = text("hi");
  r.set_max_tokens(-5);
  v.push_back({"negative max_tokens", r, grpc::StatusCode::INVALID_ARGUMENT, "max_tokens: must be at least 1 (got -5)"});
  r = text("hi");
  r.mutable_sampling()->set_top_p(1.5f);
  v.push_back({"top_p > 1", r, grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p: must be in (0, 1] (got 1.5)"});
  r = text("hi");
  r.mutable_sampling()->set_temperature(-1.0f);
  v.push_back({"negative temperature", r, grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"});
  r = text("hi");
  r.mutable_sampling()->set_top_k(-3);
  v.push_back({"negative top_k", r, grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_k"});
  r = text("hi");
  r.mutable_sampling()->set_min_p(2.0f);
  v.push_back({"min_p > 1", r, grpc::StatusCode::INVALID_ARGUMENT, "sampling.min_p"});
  r = v1::GenerateRequest{};
  r.mutable_tokens()->add_ids(1);
  r.mutable_tokens()->add_ids(99999);
  v.push_back({"unknown token id", r, grpc::StatusCode::INVALID_ARGUMENT, "prompt.tokens[1]: unknown token id 99999"});
  r = v1::GenerateRequest{};
  r.mutable_tokens()->add_ids(-7);
  v.push_back({"negative token id", r, grpc::StatusCode::INVALID_ARGUMENT, "prompt.tokens[0]: unknown token id -7"});
  r = v1::GenerateRequest{};
  r.mutable_tokens();
  v.push_back({"empty token list", r, grpc::StatusCode::INVALID_ARGUMENT, "prompt.tokens: empty"});
  std::string big;
  for (int i = 0; i < 2000; ++i) big += "word ";
  v.push_back({"oversize prompt", text(big), grpc::StatusCode::RESOURCE_EXHAUSTED, "prompt: "});
  r = text("hi");
  r.set_max_tokens(kCtx);
  v.push_back({"prompt + max_tokens over the context", r, grpc::StatusCode::RESOURCE_EXHAUSTED,
               "exceed the context length 512"});
  r = v1::GenerateRequest{};
  r.mutable_chat();
  v.push_back({"chat without messages", r, grpc::StatusCode::INVALID_ARGUMENT, "chat.messages: no messages"});
  r = v1::GenerateRequest{};
  auto* m = r.mutable_chat()->add_messages();
  m->set_role("robot");
  m->set_content("hi");
  v.push_back({"chat: unknown role", r, grpc::StatusCode::INVALID_ARGUMENT, "chat.messages[0].role: 'robot'"});
  r = v1::GenerateRequest{};
  m = r.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  m = r.mutable_chat()->add_messages();
  m->set_role("assistant");
  v.push_back({"chat: empty content", r, grpc::StatusCode::INVALID_ARGUMENT, "chat.messages[1].content: empty"});
  r = v1::GenerateRequest{};
  m = r.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  m = r.mutable_chat()->add_messages();
  m->set_role("system");
  m->set_content("late");
  v.push_back({"chat: system not first", r, grpc::StatusCode::INVALID_ARGUMENT, "chat.messages[1].role"});
  r = text("hi");
  r.add_stop("");
  v.push_back({"empty stop string", r, grpc::StatusCode::INVALID_ARGUMENT, "stop[0]: empty"});
  return v;
}

TEST_F(Serving, BadRequestsGetNamedStatusCodes) {
  for (const auto& c : bad_cases()) {
    SCOPED_TRACE(c.name);
    const auto r = generate(coord_->stub(), c.req, 10000);
    EXPECT_EQ(r.status.error_code(), c.code) << r.status.error_message();
    EXPECT_NE(r.status.error_message().find(c.message), std::string::npos) << r.status.error_message();
    EXPECT_TRUE(r.ids.empty());
  }
  grpc::ClientContext ctx;
  v1::DetokenizeRequest dr;
  v1::DetokenizeResponse dres;
  dr.add_ids(5);
  dr.add_ids(1 << 20);
  const auto st = coord_->stub().Detokenize(&ctx, dr, &dres);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("ids[1]"), std::string::npos);
  // The server is still up and serving.
  EXPECT_EQ(coord_->health(), "SERVING");
  const auto ok = generate(coord_->stub(), request_of({"still fine", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0, 4}));
  EXPECT_TRUE(ok.status.ok());
  EXPECT_EQ(ok.ids.size(), 4u);
}

TEST_F(Serving, ClientCommandLine) {
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(PIPELLM_CLIENT_BIN) + " --addr " + coord_->address() + " " + args + " 2>&1";
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    while (p && std::fgets(buf.data(), buf.size(), p)) out += buf.data();
    const int st = p ? ::pclose(p) : -1;
    return std::make_pair(WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
  };
  auto [rc, out] = run("health");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("SERVING"), std::string::npos);
  std::tie(rc, out) = run("info");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("\"context_length\": 512"), std::string::npos) << out;
  std::tie(rc, out) = run("generate -p Hello -n 6 --temp 0 --json");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("\"finish_reason\":\"length\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"generated_tokens\":6"), std::string::npos) << out;
  std::tie(rc, out) = run("tokenize 'Hello world'");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("\"ids\""), std::string::npos);
  // What the server judges comes back as its error (exit 2).
  std::tie(rc, out) = run("generate -p hi --top-k 1000000");
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("error: INVALID_ARGUMENT: sampling.top_k"), std::string::npos) << out;
  // Issue 21 item 11: values out of range are refused, never dropped or wrapped: the shared flag
  // ranges (flags/llama_flags.h) refuse them before sending (a usage error).
  const std::vector<std::pair<std::string, std::string>> usage = {
      {"detokenize 4294967297", "ids: item 1 ('4294967297') is not a token id"},
      {"detokenize 1,,2", "ids: item 2 ('') is not a token id"},
      {"generate --tokens 1,-3", "--tokens: item 2 ('-3') is not a token id"},
      {"generate -p hi --top-p 1.5", "--top-p"},
      {"generate -p hi --temp -1", "--temp"},
      {"generate -p hi --temp 1e309", "--temp: ('1e309' is not a finite number)"},
      {"generate -p hi --seed -5", "--seed: '-5' is not a seed"},
      {"generate -p hi --seed 18446744073709551616", "--seed: '18446744073709551616' is not a seed"},
  };
  for (const auto& [args, words] : usage) {
    std::tie(rc, out) = run(args);
    EXPECT_NE(rc, 0) << args;
    EXPECT_NE(rc, 2) << args << ": a usage error, not a server error\n" << out;
    EXPECT_NE(out.find(words), std::string::npos) << args << "\n" << out;
  }
}

// One slot, 20 ms per step: streams last long enough to cancel, time out and queue.
class SlowServing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    coord_ = new CoordinatorProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "1024",
                                     "--slots", "1", "--threads", "1", "--max-queue", "1", "--debug-step-delay-ms",
                                     "20", "--default-max-tokens", "900"});
    ASSERT_TRUE(coord_->wait_health("SERVING", 30000)) << coord_->log();
  }
  static void TearDownTestSuite() {
    delete coord_;
    coord_ = nullptr;
  }
  static v1::GenerateRequest long_request() {
    v1::GenerateRequest r;
    r.set_text("a long story");
    r.mutable_sampling()->set_temperature(0.0f);
    r.set_max_tokens(900);  // 18 s at 20 ms per token
    r.set_ignore_eos(true);
    return r;
  }
  static int in_flight() {
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    coord_->stub().GetModelInfo(&ctx, v1::ModelInfoRequest{}, &info);
    return info.in_flight() + info.queued();
  }
  static bool wait_idle(int timeout_ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
      if (in_flight() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  static CoordinatorProcess* coord_;
};
CoordinatorProcess* SlowServing::coord_ = nullptr;

TEST_F(SlowServing, CancellationFreesTheSlot) {
  grpc::ClientContext ctx;
  auto reader = coord_->stub().Generate(&ctx, long_request());
  v1::GenerateResponse m;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&m));
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(wait_idle(2000)) << "the cancelled sequence still holds the only slot";
  const auto t0 = std::chrono::steady_clock::now();
  auto small = long_request();
  small.set_max_tokens(3);
  const auto r = generate(coord_->stub(), small, 5000);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids.size(), 3u);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

TEST_F(SlowServing, DeadlineIsHonoured) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = generate(coord_->stub(), long_request(), 400);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(s, 2.0);
  EXPECT_GT(r.ids.size(), 0u);
  EXPECT_LT(r.ids.size(), 900u);
  EXPECT_TRUE(wait_idle(2000)) << "the timed-out sequence still holds the slot";
}

TEST_F(SlowServing, FullQueueIsResourceExhausted) {
  // One running, one queued; the third is refused.
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  v1::GenerateResponse m;
  for (int i = 0; i < 2; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(coord_->stub().Generate(ctxs.back().get(), long_request()));
    if (i == 0) {
      ASSERT_TRUE(readers.back()->Read(&m));  // running
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (in_flight() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto r = generate(coord_->stub(), long_request(), 5000);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(r.status.error_message().find("queue is full"), std::string::npos) << r.status.error_message();
  for (auto& c : ctxs) c->TryCancel();
  for (auto& rd : readers) {
    while (rd->Read(&m)) {
    }
    rd->Finish();
  }
  EXPECT_TRUE(wait_idle(3000));
}

}  // namespace
}  // namespace pipellm::test

// Both front doors drive a request through the one generation path (coordinator/generation.*),
// so every way a stream can end looks the same on both. Here the real HTTP door and the real
// gRPC service serve one RequestScheduler whose backend is scripted by the test (tokens every
// few ms; the test takes the stages down, cancels from the server side, fails a forward pass),
// so each ending is deterministic: the same text and ids, the same finish reason and stop
// string, and for failures the equivalent status (gRPC code <-> OpenAI error object) carrying
// the same message text. The mapping tables of the two doors are checked against each other.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "coordinator/generation.h"
#include "coordinator/grpc_service.h"
#include "coordinator/http_openai.h"
#include "coordinator/http_server.h"
#include "coordinator/metrics.h"
#include "engine/gguf/gguf_file.h"
#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;
namespace v1 = pipellm::v1;
using coord::Code;

constexpr int kCtx = 512;
constexpr auto kTokenEvery = std::chrono::milliseconds(4);

// A head stage played by the test: every live request gets one token of `script` (cycled) each
// kTokenEvery until its max_tokens (Finished: length). Cancels are confirmed with
// Finished(cancelled), as the head does. The test ends requests in other ways by hand.
// A request that asks for logprobs gets scripted_logprob(k) with its k-th token, else NaN.
float scripted_logprob(int k) { return -0.25f * static_cast<float>(1 + k % 7); }

class ScriptedBackend final : public coord::Backend {
 public:
  ScriptedBackend(link::HelloMsg hello, std::vector<int32_t> script) : hello_(std::move(hello)), script_(std::move(script)) {}
  ~ScriptedBackend() override { stop(); }

  void start(coord::BackendListener* l) override {
    listener_ = l;
    l->on_up(hello_);
    thread_ = std::thread([this] { run(); });
  }
  // Called by the scheduler under its lock: only our own state is touched here.
  void submit(const link::SubmitRequest& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    live_[r.id] = Live{r.max_tokens, 0, r.sampling.logprobs};
    ++submitted_;
    cv_.notify_all();
  }
  void cancel(uint64_t id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (live_.erase(id)) {
      cancelled_.insert(id);
      confirm_.push_back(id);
    }
    cv_.notify_all();
  }
  void stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  coord::BackendState state() const override { return coord::BackendState::Serving; }
  std::string describe() const override { return "scripted"; }

  // Waits until `n` requests are live, each with at least `tokens` tokens sent.
  bool wait_live(size_t n, int tokens, int timeout_ms = 10000) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
      if (live_.size() != n) return false;
      for (const auto& kv : live_) {
        if (kv.second.sent < tokens) return false;
      }
      return true;
    });
  }
  bool wait_idle(int timeout_ms = 5000) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return live_.empty() && confirm_.empty(); });
  }
  size_t cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_.size();
  }
  std::vector<uint64_t> take_live() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint64_t> ids;
    for (const auto& kv : live_) ids.push_back(kv.first);
    live_.clear();
    return ids;
  }
  // The stages fail: every open request is lost; then they come back (the next test serves).
  void go_down_and_up(const std::string& reason) {
    take_live();
    listener_->on_down(reason);
    listener_->on_up(hello_);
  }
  // The head reports a per-request error (as a failed forward pass does).
  void fail_requests(const std::string& message) {
    for (uint64_t id : take_live()) listener_->on_request_error(id, message);
  }

 private:
  struct Live {
    int max_tokens = 0;
    int sent = 0;
    bool logprobs = false;
  };
  struct Sent {
    uint64_t id;
    int32_t token;
    float logprob;
  };

  void run() {
    size_t k = 0;
    for (;;) {
      std::vector<Sent> tokens;
      std::vector<link::FinishedMsg> finished;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, kTokenEvery, [&] { return stopping_; });
        if (stopping_) return;
        for (uint64_t id : confirm_) finished.push_back({id, link::FinishReason::Cancelled, 0, 0});
        confirm_.clear();
        for (auto it = live_.begin(); it != live_.end();) {
          const float lp = it->second.logprobs ? scripted_logprob(it->second.sent) : std::nanf("");
          tokens.push_back({it->first, script_[(k + static_cast<size_t>(it->second.sent)) % script_.size()], lp});
          if (++it->second.sent >= it->second.max_tokens) {
            finished.push_back({it->first, link::FinishReason::Length, 0, it->second.sent});
            it = live_.erase(it);
          } else {
            ++it;
          }
        }
        cv_.notify_all();
      }
      // Outside our lock: the scheduler takes its own.
      for (const Sent& t : tokens) listener_->on_token(link::TokenMsg{t.id, t.token, t.logprob});
      for (const auto& f : finished) listener_->on_finished(f);
    }
  }

  link::HelloMsg hello_;
  std::vector<int32_t> script_;
  coord::BackendListener* listener_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Live> live_;
  std::vector<uint64_t> confirm_;
  std::set<uint64_t> cancelled_;
  size_t submitted_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

// What one request looked like from a door.
struct Outcome {
  std::string text;
  std::vector<int32_t> ids;  // gRPC only
  std::string finish;        // "stop", "length" (both doors' spelling)
  std::string stop_string;   // gRPC only
  bool failed = false;
  std::string error_kind;    // gRPC status name / OpenAI error code
  std::string message;
  int http_status = 0;       // HTTP only
  // Log-probabilities: gRPC token_logprobs; HTTP choices[0].logprobs (chunks joined).
  std::vector<float> logprobs;
  std::vector<std::string> lp_tokens;  // HTTP only
  std::vector<int> text_offset;         // HTTP only
  bool logprobs_null = true;            // HTTP: every logprobs field was null
  int completion_tokens = 0;            // HTTP non-streamed usage
};

std::string finish_text(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    case v1::FINISH_REASON_ERROR: return "error";
    default: return "unspecified";
  }
}

class DoorParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto gguf = GgufFile::open(model_path("tiny-llama-Q8_0"));
    text_ = new coord::ModelText(Tokenizer::from_gguf(*gguf));
    link::HelloMsg hello;
    hello.model_name = "scripted";
    hello.arch = "llama";
    hello.n_vocab = text_->tokenizer().n_vocab();
    hello.n_ctx = kCtx;
    hello.max_sequences = 4;
    // Plain words, so the text is the same however it is cut into chunks.
    coord::GenerateInput in;
    in.kind = coord::GenerateInput::PromptKind::Text;
    in.text = " the cat sat on the mat and then the dog ran away";
    in.add_special = false;
    backend_ = new ScriptedBackend(hello, text_->tokenize(in));
    sched_ = new coord::RequestScheduler(*backend_, coord::SchedulerOptions{});
    keys_ = new coord::ApiKeys();
    streams_ = new coord::StreamLimiter(0);
    metrics_ = new coord::Metrics();
    coord::FrontDoorContext ctx{*sched_, *text_, coord::RequestLimits{}, *keys_, *streams_, *metrics_};
    backend_->start(sched_);
    coord::HttpOptions ho;
    ho.listen = "127.0.0.1:0";
    ho.threads = 8;
    http_ = new coord::HttpFrontDoor(ctx, ho);
    service_ = new coord::PipeLLMService(*sched_, *text_, coord::RequestLimits{}, "scripted");
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &grpc_port_);
    b.RegisterService(service_);
    grpc_ = b.BuildAndStart().release();
    ASSERT_NE(grpc_port_, 0);
    stub_ = v1::PipeLLM::NewStub(
                grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port_), grpc::InsecureChannelCredentials()))
                .release();
  }
  static void TearDownTestSuite() {
    delete stub_;
    grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    delete grpc_;
    delete service_;
    delete http_;
    backend_->stop();
    delete sched_;
    delete backend_;
    delete metrics_;
    delete streams_;
    delete keys_;
    delete text_;
  }
  void TearDown() override {
    EXPECT_TRUE(backend_->wait_idle()) << "a request was left running";
    EXPECT_TRUE(sched_->wait_idle(std::chrono::milliseconds(2000))) << "the scheduler still counts a request";
  }

  static std::unique_ptr<httplib::Client> http() {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", http_->port());
    c->set_read_timeout(30, 0);
    return c;
  }

  // HTTP /v1/completions (streamed or not) read to the end.
  static Outcome via_http(json body, bool stream) {
    Outcome o;
    body["stream"] = stream;
    auto r = http()->Post("/v1/completions", body.dump(), "application/json");
    if (!r) {
      ADD_FAILURE() << "no HTTP response: " << httplib::to_string(r.error());
      return o;
    }
    o.http_status = r->status;
    auto take_error = [&](const json& j) {
      o.failed = true;
      o.error_kind = j["error"]["code"].get<std::string>();
      o.message = j["error"]["message"].get<std::string>();
      EXPECT_TRUE(j["error"]["type"].is_string());
    };
    if (!stream || r->status != 200) {
      const json j = json::parse(r->body, nullptr, false);
      if (j.contains("error")) {
        take_error(j);
      } else {
        o.text = j["choices"][0]["text"].get<std::string>();
        o.finish = j["choices"][0]["finish_reason"].get<std::string>();
        o.completion_tokens = j["usage"]["completion_tokens"].get<int>();
        take_logprobs(o, j["choices"][0]["logprobs"]);
      }
      return o;
    }
    const auto events = sse_payloads(r->body);
    EXPECT_FALSE(events.empty());
    if (!events.empty()) {
      EXPECT_EQ(events.back(), "[DONE]") << r->body;
    }
    for (const auto& e : events) {
      if (e == "[DONE]") break;
      const json j = json::parse(e, nullptr, false);
      if (j.contains("error")) {
        take_error(j);
        continue;
      }
      const json& ch = j["choices"][0];
      o.text += ch["text"].get<std::string>();
      if (!ch["finish_reason"].is_null()) o.finish = ch["finish_reason"].get<std::string>();
      take_logprobs(o, ch["logprobs"]);
    }
    return o;
  }
  // Completions' logprobs object (or null) appended to `o`.
  static void take_logprobs(Outcome& o, const json& lp) {
    if (lp.is_null()) return;
    o.logprobs_null = false;
    EXPECT_TRUE(lp["top_logprobs"].is_null()) << lp.dump();
    EXPECT_EQ(lp["tokens"].size(), lp["token_logprobs"].size()) << lp.dump();
    EXPECT_EQ(lp["tokens"].size(), lp["text_offset"].size()) << lp.dump();
    for (const auto& x : lp["token_logprobs"]) o.logprobs.push_back(x.get<float>());
    for (const auto& x : lp["tokens"]) o.lp_tokens.push_back(x.get<std::string>());
    for (const auto& x : lp["text_offset"]) o.text_offset.push_back(x.get<int>());
  }

  static v1::GenerateRequest grpc_request(const json& body) {
    v1::GenerateRequest r;
    r.set_text(body["prompt"].get<std::string>());
    r.set_max_tokens(body["max_tokens"].get<int>());
    r.mutable_sampling()->set_temperature(0.0f);
    if (body.contains("stop")) r.add_stop(body["stop"].get<std::string>());
    if (body.contains("ignore_eos")) r.set_ignore_eos(body["ignore_eos"].get<bool>());
    if (body.contains("logprobs")) r.mutable_sampling()->set_logprobs(true);
    return r;
  }

  static Outcome read_grpc(grpc::ClientReader<v1::GenerateResponse>& reader) {
    Outcome o;
    v1::GenerateResponse m;
    while (reader.Read(&m)) {
      if (m.has_chunk()) {
        o.text += m.chunk().text();
        o.ids.insert(o.ids.end(), m.chunk().token_ids().begin(), m.chunk().token_ids().end());
        o.logprobs.insert(o.logprobs.end(), m.chunk().token_logprobs().begin(), m.chunk().token_logprobs().end());
      } else if (m.has_final()) {
        o.finish = finish_text(m.final().finish_reason());
        o.stop_string = m.final().stop_string();
      }
    }
    const grpc::Status st = reader.Finish();
    if (!st.ok()) {
      o.failed = true;
      o.error_kind = coord_grpc_name(st.error_code());
      o.message = st.error_message();
    }
    return o;
  }
  static std::string coord_grpc_name(grpc::StatusCode c) {
    switch (c) {
      case grpc::StatusCode::CANCELLED: return "CANCELLED";
      case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
      case grpc::StatusCode::INTERNAL: return "INTERNAL";
      case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
      case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
      case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
      default: return "code " + std::to_string(static_cast<int>(c));
    }
  }
  static Outcome via_grpc(const json& body) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto reader = stub_->Generate(&ctx, grpc_request(body));
    return read_grpc(*reader);
  }

  // One HTTP stream and one gRPC stream open at once, both past their first tokens; then
  // `inject` ends them from the server's side.
  static std::pair<Outcome, Outcome> both_open_then(const std::function<void()>& inject) {
    const json body = {{"prompt", "a long one"}, {"max_tokens", 400}, {"ignore_eos", true}};
    Outcome h;
    std::thread t([&] { h = via_http(body, true); });
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto reader = stub_->Generate(&ctx, grpc_request(body));
    EXPECT_TRUE(backend_->wait_live(2, 5)) << "both streams did not start";
    inject();
    const Outcome g = read_grpc(*reader);
    t.join();
    EXPECT_FALSE(h.text.empty()) << "the HTTP stream ended before any text";
    EXPECT_FALSE(g.text.empty()) << "the gRPC stream ended before any text";
    return {h, g};
  }

  static coord::ModelText* text_;
  static ScriptedBackend* backend_;
  static coord::RequestScheduler* sched_;
  static coord::ApiKeys* keys_;
  static coord::StreamLimiter* streams_;
  static coord::Metrics* metrics_;
  static coord::HttpFrontDoor* http_;
  static coord::PipeLLMService* service_;
  static grpc::Server* grpc_;
  static int grpc_port_;
  static v1::PipeLLM::Stub* stub_;
};
coord::ModelText* DoorParity::text_ = nullptr;
ScriptedBackend* DoorParity::backend_ = nullptr;
coord::RequestScheduler* DoorParity::sched_ = nullptr;
coord::ApiKeys* DoorParity::keys_ = nullptr;
coord::StreamLimiter* DoorParity::streams_ = nullptr;
coord::Metrics* DoorParity::metrics_ = nullptr;
coord::HttpFrontDoor* DoorParity::http_ = nullptr;
coord::PipeLLMService* DoorParity::service_ = nullptr;
grpc::Server* DoorParity::grpc_ = nullptr;
int DoorParity::grpc_port_ = 0;
v1::PipeLLM::Stub* DoorParity::stub_ = nullptr;

TEST_F(DoorParity, SameTextIdsAndFinish) {
  const json body = {{"prompt", "hello"}, {"max_tokens", 20}, {"ignore_eos", true}};
  const Outcome whole = via_http(body, false);
  const Outcome streamed = via_http(body, true);
  const Outcome g = via_grpc(body);
  ASSERT_FALSE(g.failed) << g.message;
  EXPECT_EQ(g.ids.size(), 20u) << "every generated id is sent once";
  EXPECT_FALSE(g.text.empty());
  EXPECT_EQ(whole.text, g.text);
  EXPECT_EQ(streamed.text, g.text);
  EXPECT_EQ(whole.finish, "length");
  EXPECT_EQ(streamed.finish, "length");
  EXPECT_EQ(g.finish, "length");
}

TEST_F(DoorParity, StopStringEndsBothTheSameWay) {
  const json plain = {{"prompt", "hello"}, {"max_tokens", 30}, {"ignore_eos", true}};
  const std::string full = via_grpc(plain).text;
  const std::string stop = "the dog";
  ASSERT_NE(full.find(stop), std::string::npos) << full;
  json body = plain;
  body["stop"] = stop;
  const Outcome h = via_http(body, true);
  const Outcome hw = via_http(body, false);
  const Outcome g = via_grpc(body);
  ASSERT_FALSE(g.failed) << g.message;
  EXPECT_EQ(g.text, full.substr(0, full.find(stop)));
  EXPECT_EQ(h.text, g.text);
  EXPECT_EQ(hw.text, g.text);
  EXPECT_EQ(g.finish, "stop");
  EXPECT_EQ(h.finish, "stop");
  EXPECT_EQ(hw.finish, "stop");
  EXPECT_EQ(g.stop_string, stop);
  EXPECT_FALSE(g.ids.empty());
}

// Logprobs come from the stages' TokenMsg through the one generation path: both doors report the
// same values for the same tokens (gRPC parallel to token_ids; HTTP streamed and not), one per
// generated token, with a stop string too; a request that does not ask gets none.
TEST_F(DoorParity, LogprobsSameOnBothDoors) {
  for (const bool with_stop : {false, true}) {
    SCOPED_TRACE(with_stop ? "stop string" : "length");
    json body = {{"prompt", "hello"}, {"max_tokens", 40}, {"ignore_eos", true}, {"logprobs", 0}};
    if (with_stop) body["stop"] = "the dog";
    const Outcome g = via_grpc(body);
    const Outcome whole = via_http(body, false);
    const Outcome streamed = via_http(body, true);
    ASSERT_FALSE(g.failed) << g.message;
    ASSERT_EQ(g.logprobs.size(), g.ids.size()) << "token_logprobs parallel to token_ids";
    if (with_stop) {
      EXPECT_LT(g.ids.size(), 40u);
    } else {
      EXPECT_EQ(g.ids.size(), 40u);
    }
    for (size_t k = 0; k < g.logprobs.size(); ++k) EXPECT_EQ(g.logprobs[k], scripted_logprob(static_cast<int>(k)));
    EXPECT_EQ(whole.completion_tokens, static_cast<int>(g.ids.size()));
    EXPECT_EQ(whole.logprobs, g.logprobs);
    EXPECT_EQ(streamed.logprobs, g.logprobs);
    EXPECT_EQ(streamed.lp_tokens, whole.lp_tokens);
    EXPECT_EQ(streamed.text_offset, whole.text_offset);
    // Each token's piece sits at its offset in the returned text (ASCII words here).
    std::string joined;
    for (size_t k = 0; k < whole.lp_tokens.size(); ++k) {
      SCOPED_TRACE(k);
      const size_t at = static_cast<size_t>(whole.text_offset[k]);
      if (!with_stop || at + whole.lp_tokens[k].size() <= whole.text.size()) {
        EXPECT_EQ(whole.text.compare(at, whole.lp_tokens[k].size(), whole.lp_tokens[k]), 0) << whole.text;
        EXPECT_EQ(at, joined.size());
      } else {
        EXPECT_LE(at, whole.text.size());  // the stop string's tokens: capped at the text's end
      }
      joined += whole.lp_tokens[k];
    }
    if (!with_stop) {
      EXPECT_EQ(joined, whole.text);
    }
    EXPECT_EQ(whole.text, g.text);
  }
  const json plain = {{"prompt", "hello"}, {"max_tokens", 6}, {"ignore_eos", true}};
  EXPECT_TRUE(via_grpc(plain).logprobs.empty());
  EXPECT_TRUE(via_http(plain, false).logprobs_null);
  EXPECT_TRUE(via_http(plain, true).logprobs_null);
}

TEST_F(DoorParity, StagesDownEndsBothStreamsWithTheSameMessage) {
  const std::string reason = "rank 1 exited (injected fault at step 7)";
  const auto [h, g] = both_open_then([&] { backend_->go_down_and_up(reason); });
  ASSERT_TRUE(g.failed);
  ASSERT_TRUE(h.failed);
  EXPECT_EQ(g.error_kind, "UNAVAILABLE");
  EXPECT_EQ(h.error_kind, "stages_unavailable");
  EXPECT_EQ(h.http_status, 200) << "the stream had started";
  EXPECT_EQ(g.message, h.message);
  EXPECT_NE(g.message.find(reason), std::string::npos) << g.message;
  EXPECT_NE(g.message.find("went down"), std::string::npos) << g.message;
}

TEST_F(DoorParity, ServerCancelEndsBothStreamsWithTheSameMessage) {
  const auto [h, g] = both_open_then([&] { sched_->cancel_all(); });
  ASSERT_TRUE(g.failed);
  ASSERT_TRUE(h.failed);
  EXPECT_EQ(g.error_kind, "UNAVAILABLE");
  EXPECT_EQ(h.error_kind, "shutting_down");
  EXPECT_EQ(g.message, h.message);
  EXPECT_NE(g.message.find("cancelled by the server"), std::string::npos) << g.message;
}

TEST_F(DoorParity, ForwardPassFailureEndsBothStreamsWithTheSameMessage) {
  const std::string msg = "forward pass failed: rank 1: injected fault";
  const auto [h, g] = both_open_then([&] { backend_->fail_requests(msg); });
  ASSERT_TRUE(g.failed);
  ASSERT_TRUE(h.failed);
  EXPECT_EQ(g.error_kind, "INTERNAL");
  EXPECT_EQ(h.error_kind, "internal_error");
  EXPECT_EQ(g.message, msg);
  EXPECT_EQ(h.message, msg);
}

TEST_F(DoorParity, ClientCancelOnEitherDoorCancelsTheSequence) {
  const size_t before = backend_->cancelled();
  {  // gRPC: the client cancels after a few chunks.
    grpc::ClientContext ctx;
    auto reader = stub_->Generate(&ctx, grpc_request({{"prompt", "x"}, {"max_tokens", 400}, {"ignore_eos", true}}));
    v1::GenerateResponse m;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&m));
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_TRUE(backend_->wait_idle());
    EXPECT_EQ(backend_->cancelled(), before + 1);
  }
  {  // HTTP: the client hangs up mid-stream.
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(http_->port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const std::string body = R"({"prompt":"x","max_tokens":400,"ignore_eos":true,"stream":true})";
    const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
    ASSERT_TRUE(backend_->wait_live(1, 3));
    ::close(fd);
    EXPECT_TRUE(backend_->wait_idle());
    EXPECT_EQ(backend_->cancelled(), before + 2);
  }
  EXPECT_TRUE(sched_->wait_idle(std::chrono::milliseconds(2000))) << "the scheduler still counts a sequence";
}

// The pieces of LogprobTrack: each token's own text (the first one's leading space dropped as
// decode() drops it), its bytes, and its offset in the returned text; byte tokens of one
// multi-byte character each report their byte, a replacement character as the token string, and
// the character's offset.
TEST(OpenAiLogprobTrack, PiecesBytesAndOffsets) {
  auto gguf = GgufFile::open(model_path("tiny-llama-Q8_0"));
  const auto tok = Tokenizer::from_gguf(*gguf);
  std::vector<int32_t> ids = tok->encode("The cat sat", false, false);
  ASSERT_GE(ids.size(), 3u);
  const size_t n_words = ids.size();
  // "€" = E2 82 AC as three byte-fallback tokens, when the vocabulary has them.
  std::vector<int32_t> bytes_ids;
  for (const char* b : {"\xE2", "\x82", "\xAC"}) {
    for (int32_t id = 0; id < tok->n_vocab(); ++id) {
      if (tok->render_piece(id) == b) {
        bytes_ids.push_back(id);
        break;
      }
    }
  }
  const bool with_bytes = bytes_ids.size() == 3;
  if (with_bytes) ids.insert(ids.end(), bytes_ids.begin(), bytes_ids.end());
  const std::string text = coord::valid_utf8(tok->decode(ids));
  std::vector<float> lps;
  for (size_t k = 0; k < ids.size(); ++k) lps.push_back(-0.5f * static_cast<float>(k + 1));

  coord::LogprobTrack chat(*tok);
  chat.add_tokens(ids, lps);
  chat.add_text(text);
  EXPECT_TRUE(chat.pending());
  const json c = chat.take_chat();
  EXPECT_FALSE(chat.pending());
  EXPECT_EQ(chat.taken(), ids.size());
  ASSERT_EQ(c["content"].size(), ids.size()) << c.dump();
  std::string joined;
  for (size_t k = 0; k < ids.size(); ++k) {
    const json& e = c["content"][k];
    EXPECT_EQ(e["logprob"].get<float>(), lps[k]);
    EXPECT_EQ(e["top_logprobs"], json::array());
    std::string raw;
    for (const auto& b : e["bytes"]) raw += static_cast<char>(b.get<int>());
    if (k < n_words) {
      EXPECT_EQ(e["token"].get<std::string>(), raw);
    }
    joined += raw;
  }
  EXPECT_EQ(joined, tok->decode(ids)) << "the pieces' bytes make up the text";
  if (tok->strips_first_space()) {  // as decode() does
    EXPECT_NE(c["content"][0]["token"].get<std::string>().substr(0, 1), " ") << c.dump();
  }

  coord::LogprobTrack cmpl(*tok);
  cmpl.add_tokens(ids, lps);
  cmpl.add_text(text);
  const json j = cmpl.take_completion();
  EXPECT_TRUE(j["top_logprobs"].is_null());
  ASSERT_EQ(j["tokens"].size(), ids.size());
  size_t at = 0;
  for (size_t k = 0; k < n_words; ++k) {
    EXPECT_EQ(j["text_offset"][k].get<size_t>(), at) << k;
    at += j["tokens"][k].get<std::string>().size();
  }
  if (with_bytes) {
    for (size_t k = n_words; k < ids.size(); ++k) {
      EXPECT_EQ(j["tokens"][k], "\xEF\xBF\xBD") << "a lone byte: the replacement character";
      EXPECT_EQ(j["text_offset"][k].get<size_t>(), at) << "the offset of the character it is part of";
    }
    EXPECT_EQ(c["content"][n_words]["bytes"], json::array({0xE2}));
    EXPECT_EQ(text.substr(at), "\xE2\x82\xAC");
  }
  // Not asked: the stages send NaN, reported as null.
  coord::LogprobTrack none(*tok);
  none.add_tokens({ids[0]}, {std::nanf("")});
  EXPECT_TRUE(none.take_chat()["content"][0]["logprob"].is_null());
}

// The two doors' tables: every coordinator Code a failure can carry maps to equivalent
// statuses (gRPC status <-> HTTP status and OpenAI error code), and both keep the message.
TEST(DoorMapping, FailureCodesMapToEquivalentStatuses) {
  struct Row {
    Code code;
    grpc::StatusCode grpc;
    int http;
    const char* error_code;
  };
  const Row rows[] = {
      {Code::InvalidArgument, grpc::StatusCode::INVALID_ARGUMENT, 400, "invalid_parameter"},
      {Code::ResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED, 429, "queue_full"},
      {Code::Unavailable, grpc::StatusCode::UNAVAILABLE, 503, "stages_unavailable"},
      {Code::DeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED, 504, "timeout"},
      {Code::Internal, grpc::StatusCode::INTERNAL, 500, "internal_error"},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(coord::code_name(r.code));
    const std::string msg = "max_tokens: the failure's own words";
    EXPECT_EQ(coord::grpc_code(r.code), r.grpc);
    const coord::ApiError e = coord::error_of_failure(r.code, msg);
    EXPECT_EQ(e.status, r.http);
    EXPECT_EQ(e.code, r.error_code);
    EXPECT_EQ(e.message, msg);
  }
  // Shutting down is UNAVAILABLE on gRPC, 503 "shutting_down" on HTTP.
  const coord::ApiError e = coord::error_of_failure(Code::Unavailable, "the server is shutting down");
  EXPECT_EQ(e.status, 503);
  EXPECT_EQ(e.code, "shutting_down");
}

}  // namespace
}  // namespace pipellm::test

// The same scenarios through both front doors of a real pipellm-coordinator, which drive every
// request through one generation path: (a) a greedy request gives the same text over HTTP and
// gRPC; (b) a client that cancels mid-stream frees the only slot on either door (GetModelInfo
// and /metrics show nothing in flight, the next request runs at once); (c) a stage that fails
// (pipellm-stage --fault-rank 1 --fault-kind throw under mpirun, two CPU ranks) ends an open
// stream on both doors with the equivalent error -- gRPC UNAVAILABLE, HTTP an error event
// "stages_unavailable" -- carrying the same message.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;
namespace v1 = pipellm::v1;
using steady = std::chrono::steady_clock;
constexpr const char* kModel = "tiny-llama-Q8_0";

double seconds_since(steady::time_point t) { return std::chrono::duration<double>(steady::now() - t).count(); }

// What one request looked like from a door.
struct Outcome {
  std::string text;
  std::string finish;
  int tokens = 0;  // usage.completion_tokens / usage.generated_tokens
  bool failed = false;
  std::string error_kind;  // gRPC status code name / OpenAI error code
  std::string error_type;  // OpenAI error type
  std::string message;
  int http_status = 0;
  int chunks_before_end = 0;  // text chunks received before the stream ended
};

v1::GenerateRequest grpc_request(const json& body) {
  v1::GenerateRequest r;
  if (body.contains("messages")) {
    for (const auto& m : body["messages"]) {
      auto* x = r.mutable_chat()->add_messages();
      x->set_role(m["role"].get<std::string>());
      x->set_content(m["content"].get<std::string>());
    }
  } else {
    r.set_text(body["prompt"].get<std::string>());
  }
  r.set_max_tokens(body["max_tokens"].get<int>());
  r.mutable_sampling()->set_temperature(0.0f);
  if (body.contains("stop")) r.add_stop(body["stop"].get<std::string>());
  if (body.contains("ignore_eos")) r.set_ignore_eos(body["ignore_eos"].get<bool>());
  return r;
}

std::string finish_text(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    case v1::FINISH_REASON_ERROR: return "error";
    default: return "unspecified";
  }
}

Outcome read_grpc(grpc::ClientReader<v1::GenerateResponse>& reader, int already = 0) {
  Outcome o;
  o.chunks_before_end = already;
  v1::GenerateResponse m;
  while (reader.Read(&m)) {
    if (m.has_chunk()) {
      o.text += m.chunk().text();
      ++o.chunks_before_end;
    } else if (m.has_final()) {
      o.finish = finish_text(m.final().finish_reason());
      o.tokens = static_cast<int>(m.final().usage().generated_tokens());
    }
  }
  const grpc::Status st = reader.Finish();
  if (!st.ok()) {
    o.failed = true;
    o.error_kind = st.error_code() == grpc::StatusCode::UNAVAILABLE ? "UNAVAILABLE"
                   : st.error_code() == grpc::StatusCode::CANCELLED ? "CANCELLED"
                                                                    : "code " + std::to_string(st.error_code());
    o.message = st.error_message();
  }
  return o;
}

Outcome via_grpc(v1::PipeLLM::Stub& stub, const json& body) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub.Generate(&ctx, grpc_request(body));
  return read_grpc(*reader);
}

// POST to /v1/completions or /v1/chat/completions (by the body), streamed or not, to the end.
Outcome via_http(httplib::Client& c, json body, bool stream) {
  Outcome o;
  const bool chat = body.contains("messages");
  body["temperature"] = 0;
  body["stream"] = stream;
  if (stream) body["stream_options"] = {{"include_usage", true}};
  auto r = c.Post(chat ? "/v1/chat/completions" : "/v1/completions", body.dump(), "application/json");
  if (!r) {
    ADD_FAILURE() << "no HTTP response: " << httplib::to_string(r.error());
    return o;
  }
  o.http_status = r->status;
  auto take_error = [&](const json& j) {
    o.failed = true;
    o.error_kind = j["error"]["code"].get<std::string>();
    o.error_type = j["error"]["type"].get<std::string>();
    o.message = j["error"]["message"].get<std::string>();
  };
  if (!stream || r->status != 200) {
    const json j = json::parse(r->body, nullptr, false);
    if (j.contains("error")) {
      take_error(j);
      return o;
    }
    const json& ch = j["choices"][0];
    o.text = chat ? ch["message"]["content"].get<std::string>() : ch["text"].get<std::string>();
    o.finish = ch["finish_reason"].get<std::string>();
    o.tokens = j["usage"]["completion_tokens"].get<int>();
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
    if (j.is_discarded()) {
      ADD_FAILURE() << "not JSON: " << e;
      continue;
    }
    if (j.contains("error")) {
      take_error(j);
      continue;
    }
    if (j.contains("usage") && j["choices"].empty()) {
      o.tokens = j["usage"]["completion_tokens"].get<int>();
      continue;
    }
    const json& ch = j["choices"][0];
    const std::string piece = chat ? ch["delta"].value("content", std::string()) : ch["text"].get<std::string>();
    if (!piece.empty()) ++o.chunks_before_end;
    o.text += piece;
    if (!ch["finish_reason"].is_null()) o.finish = ch["finish_reason"].get<std::string>();
  }
  return o;
}

// ---- (a) and (b): in-process CPU backend, one slot, slow steps ----

class DoorParityE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    srv_ = new ServingProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", "512", "--slots", "1",
                               "--threads", "1", "--max-queue", "8", "--debug-step-delay-ms", "15"});
  }
  static void TearDownTestSuite() {
    delete srv_;
    srv_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "coordinator log:\n" << srv_->log() << std::endl;
  }

  // Requests in flight or queued, as each door reports it.
  static int grpc_busy() {
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    if (!srv_->stub().GetModelInfo(&ctx, v1::ModelInfoRequest{}, &info).ok()) return -1;
    return info.in_flight() + info.queued();
  }
  static int http_busy() {
    auto r = srv_->http()->Get("/metrics");
    if (!r || r->status != 200) return -1;
    double busy = 0;
    std::istringstream in(r->body);
    std::string line;
    while (std::getline(in, line)) {
      for (const char* name : {"pipellm_active_sequences ", "pipellm_queue_depth "}) {
        if (line.rfind(name, 0) == 0) busy += std::stod(line.substr(std::string(name).size()));
      }
    }
    return static_cast<int>(busy);
  }
  static bool wait_idle(int timeout_ms) {
    const auto until = steady::now() + std::chrono::milliseconds(timeout_ms);
    while (steady::now() < until) {
      if (grpc_busy() == 0 && http_busy() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  // The only slot is free: a short request on each door completes at once.
  static void expect_slot_free() {
    const json small = {{"prompt", "next one"}, {"max_tokens", 3}, {"ignore_eos", true}};
    auto t0 = steady::now();
    const Outcome g = via_grpc(srv_->stub(), small);
    EXPECT_FALSE(g.failed) << g.message;
    EXPECT_EQ(g.tokens, 3);
    EXPECT_LT(seconds_since(t0), 2.0) << "gRPC request waited for the slot";
    t0 = steady::now();
    auto c = srv_->http();
    const Outcome h = via_http(*c, small, false);
    EXPECT_EQ(h.http_status, 200) << h.message;
    EXPECT_EQ(h.tokens, 3);
    EXPECT_LT(seconds_since(t0), 2.0) << "HTTP request waited for the slot";
  }
  static json long_body() { return {{"prompt", "keep going"}, {"max_tokens", 400}, {"ignore_eos", true}}; }

  static ServingProcess* srv_;
};
ServingProcess* DoorParityE2E::srv_ = nullptr;

// (a) The same greedy request, the same text: HTTP (whole and streamed) and gRPC.
TEST_F(DoorParityE2E, GreedyRequestGivesTheSameTextOnBothDoors) {
  const json bodies[] = {
      {{"prompt", "Once upon a time"}, {"max_tokens", 16}, {"ignore_eos", true}},
      {{"messages", {{{"role", "user"}, {"content", "Tell me about cats"}}}}, {"max_tokens", 12}, {"ignore_eos", true}},
  };
  auto c = srv_->http();
  for (const json& body : bodies) {
    SCOPED_TRACE(body.dump());
    const Outcome g = via_grpc(srv_->stub(), body);
    const Outcome h = via_http(*c, body, false);
    const Outcome s = via_http(*c, body, true);
    ASSERT_FALSE(g.failed) << g.message;
    ASSERT_FALSE(h.failed) << h.message;
    ASSERT_FALSE(s.failed) << s.message;
    EXPECT_FALSE(g.text.empty());
    EXPECT_EQ(h.text, g.text);
    EXPECT_EQ(s.text, g.text);
    EXPECT_EQ(g.finish, "length");
    EXPECT_EQ(h.finish, g.finish);
    EXPECT_EQ(s.finish, g.finish);
    EXPECT_EQ(g.tokens, body["max_tokens"].get<int>());
    EXPECT_EQ(h.tokens, g.tokens);
    EXPECT_EQ(s.tokens, g.tokens);
  }
  // A stop string cuts the same text on both, finish "stop".
  const json plain = {{"prompt", "Once upon a time"}, {"max_tokens", 24}, {"ignore_eos", true}};
  const std::string full = via_grpc(srv_->stub(), plain).text;
  ASSERT_GT(full.size(), 10u);
  json cut = plain;
  cut["stop"] = full.substr(6, 3);
  const Outcome g = via_grpc(srv_->stub(), cut);
  const Outcome s = via_http(*c, cut, true);
  EXPECT_EQ(g.text, full.substr(0, full.find(cut["stop"].get<std::string>())));
  EXPECT_EQ(s.text, g.text);
  EXPECT_EQ(g.finish, "stop");
  EXPECT_EQ(s.finish, "stop");
}

// (b) gRPC: the client cancels after a few chunks.
TEST_F(DoorParityE2E, GrpcClientCancelFreesTheSlot) {
  grpc::ClientContext ctx;
  auto reader = srv_->stub().Generate(&ctx, grpc_request(long_body()));
  v1::GenerateResponse m;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&m));
  EXPECT_EQ(grpc_busy(), 1);
  EXPECT_EQ(http_busy(), 1);
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // 400 tokens at >= 15 ms each would hold the slot for 6 s.
  ASSERT_TRUE(wait_idle(2000)) << "the cancelled sequence still holds the only slot";
  expect_slot_free();
}

// (b) HTTP: the client hangs up after a few events.
TEST_F(DoorParityE2E, HttpClientCancelFreesTheSlot) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(srv_->http_port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  json body = long_body();
  body["stream"] = true;
  const std::string b = body.dump();
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
  ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[4096];
  auto events = [&] {
    size_t n = 0;
    for (size_t p = got.find("data: "); p != std::string::npos; p = got.find("data: ", p + 1)) ++n;
    return n;
  };
  while (events() < 3) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(grpc_busy(), 1);
  EXPECT_EQ(http_busy(), 1);
  ::close(fd);
  ASSERT_TRUE(wait_idle(2000)) << "the abandoned sequence still holds the only slot";
  expect_slot_free();
}

// ---- (c): a stage fails mid-stream (two MPI ranks, rank 1 throws at a step) ----

#ifdef PIPELLM_STAGE_BIN
bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

TEST(DoorParityFaults, StageFailureEndsOpenStreamsTheSameWayOnBothDoors) {
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found";
  const auto stamp = steady::now().time_since_epoch().count();
  const auto dir = std::filesystem::temp_directory_path() / ("pipellm_door_parity_" + std::to_string(stamp));
  std::filesystem::create_directories(dir);
  const std::string cfg = (dir / "two.yaml").string();
  std::ofstream(cfg) << "model: " << model_path(kModel) << "\ncontext_length: 1024\nmax_sequences: 4\n"
                     << "micro_batches: 2\nthreads: 1\ntransport: mpi\nstages:\n  - device: cpu\n  - device: cpu\n";
  // Steps of >= 20 ms; rank 1 throws at step 80 (well after both streams have started).
  ServingProcess srv({"--config", cfg, "--backend", "mpirun", "--stage-bin", PIPELLM_STAGE_BIN,
                      "--stage-arg=--debug-step-delay-ms", "--stage-arg=20", "--stage-arg=--fault-rank",
                      "--stage-arg=1", "--stage-arg=--fault-step", "--stage-arg=80", "--stage-arg=--fault-kind",
                      "--stage-arg=throw"});
  const json body = {{"prompt", "a long story"}, {"max_tokens", 900}, {"ignore_eos", true}};
  Outcome h;
  std::thread t([&] {
    auto c = srv.http();
    c->set_read_timeout(60, 0);
    h = via_http(*c, body, true);
  });
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = srv.stub().Generate(&ctx, grpc_request(body));
  const Outcome g = read_grpc(*reader);
  t.join();
  if (::testing::Test::HasFailure()) std::cerr << "coordinator log:\n" << srv.log() << std::endl;

  ASSERT_TRUE(g.failed) << "the gRPC stream finished: " << g.finish;
  ASSERT_TRUE(h.failed) << "the HTTP stream finished: " << h.finish;
  EXPECT_GT(g.chunks_before_end, 0) << "the gRPC stream failed before it started";
  EXPECT_GT(h.chunks_before_end, 0) << "the HTTP stream failed before it started";
  EXPECT_EQ(g.error_kind, "UNAVAILABLE") << g.message;
  EXPECT_EQ(h.http_status, 200);  // the stream had started: the error is its last event
  EXPECT_EQ(h.error_kind, "stages_unavailable") << h.message;
  EXPECT_EQ(h.error_type, "service_unavailable_error");
  EXPECT_EQ(g.message, h.message) << "the same failure, in the same words";
  EXPECT_NE(g.message.find("went down"), std::string::npos) << g.message;
  ::testing::Test::RecordProperty("failure_message", g.message);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
#endif  // PIPELLM_STAGE_BIN

}  // namespace
}  // namespace pipellm::test

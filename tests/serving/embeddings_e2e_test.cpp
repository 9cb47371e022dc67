// Embeddings on a real pipellm-coordinator (--embeddings, in-process CPU backend, tiny model):
// /v1/embeddings answers OpenAI's shape; a batch gives one vector per input at its index;
// identical inputs give identical vectors; the vector is the engine's (Embedder, the same
// pooling, L2-normalized here) for the same text within 1e-5; token ids give the vector of their
// text; base64 is the same floats; llama-server's /embedding returns the same vector nested
// (and, with pooling none, one unnormalized vector per token while /v1/embeddings refuses it);
// bad input is 400 naming `input`; without --embeddings the routes answer 501 saying so; beside
// stages it does not run itself the coordinator embeds on its own CPU.
#include <gtest/gtest.h>


#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/gguf/gguf_file.h"
#include "engine/runtime/embedding.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;
constexpr const char* kModel = "tiny-llama-Q8_0";
constexpr int kCtx = 64;

std::vector<std::string> server_args(const std::vector<std::string>& more) {
  std::vector<std::string> a = {"--model", model_path(kModel), "--backend", "inprocess", "--ctx", std::to_string(kCtx),
                                "--slots", "2", "--threads", "1"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

std::vector<float> floats(const json& a) { return a.get<std::vector<float>>(); }

std::string error_param(const json& j) { return j.contains("error") ? j["error"].value("param", "") : ""; }

std::vector<float> decode_base64_floats(const std::string& s) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string bytes;
  uint32_t w = 0;
  int bits = 0;
  for (char c : s) {
    const int v = val(c);
    if (v < 0) break;
    w = (w << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes += static_cast<char>((w >> bits) & 0xff);
    }
  }
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);  // little endian, as the host
  return out;
}

class Embeddings : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    srv_ = new ServingProcess(server_args({"--embeddings", "--pooling", "mean"}));
    auto gguf = GgufFile::open(model_path(kModel));
    tok_ = Tokenizer::from_gguf(*gguf).release();
    EmbedderOptions o;
    o.n_ctx = kCtx;
    o.n_threads = 1;
    o.pooling = Pooling::Mean;
    engine_ = Embedder::open(model_path(kModel), o).release();
  }
  static void TearDownTestSuite() {
    delete srv_;
    delete tok_;
    delete engine_;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "coordinator log:\n" << srv_->log() << std::endl;
  }
  static json embed(const json& body, int want = 200, const std::string& path = "/v1/embeddings") {
    auto c = srv_->http();
    int status = 0;
    json r = post_json(*c, path, body, &status);
    EXPECT_EQ(status, want) << body.dump() << " -> " << r.dump();
    return r;
  }
  static std::vector<float> engine_vector(const std::string& text) {
    std::vector<float> v = engine_->embed(tok_->encode(text, true, true))[0];
    normalize_embedding(v.data(), static_cast<int64_t>(v.size()), 2);
    return v;
  }
  static ServingProcess* srv_;
  static Tokenizer* tok_;
  static Embedder* engine_;
};
ServingProcess* Embeddings::srv_ = nullptr;
Tokenizer* Embeddings::tok_ = nullptr;
Embedder* Embeddings::engine_ = nullptr;

TEST_F(Embeddings, OpenAiShapeAndTheEnginesVector) {
  const std::string text = "The quick brown fox jumps over the lazy dog";
  const json r = embed({{"input", text}, {"model", "whatever"}});
  EXPECT_EQ(r["object"], "list");
  ASSERT_EQ(r["data"].size(), 1u);
  const json& d = r["data"][0];
  EXPECT_EQ(d["object"], "embedding");
  EXPECT_EQ(d["index"], 0);
  const std::vector<float> v = floats(d["embedding"]);
  ASSERT_EQ(v.size(), static_cast<size_t>(engine_->n_embd()));
  EXPECT_TRUE(r["model"].is_string());
  const int n = static_cast<int>(tok_->encode(text, true, true).size());
  EXPECT_EQ(r["usage"]["prompt_tokens"], n);
  EXPECT_EQ(r["usage"]["total_tokens"], n);

  double norm = 0.0;
  for (float x : v) norm += static_cast<double>(x) * x;
  EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-5);
  const std::vector<float> want = engine_vector(text);
  double worst = 0.0;
  for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(v[i]) - want[i]));
  EXPECT_LT(worst, 1e-5) << "the served vector vs the engine's";
}

TEST_F(Embeddings, BatchIndicesIdenticalInputsAndTokenIds) {
  const std::vector<std::string> texts = {"hello world", "a different sentence here", "hello world"};
  const json r = embed({{"input", texts}});
  ASSERT_EQ(r["data"].size(), 3u);
  std::vector<std::vector<float>> v;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r["data"][i]["index"], i);
    v.push_back(floats(r["data"][i]["embedding"]));
  }
  EXPECT_EQ(v[0], v[2]) << "identical inputs";
  EXPECT_NE(v[0], v[1]);
  EXPECT_EQ(floats(embed({{"input", "hello world"}})["data"][0]["embedding"]), v[0]) << "alone vs in a batch";
  int total = 0;
  for (const auto& t : texts) total += static_cast<int>(tok_->encode(t, true, true).size());
  EXPECT_EQ(r["usage"]["prompt_tokens"], total);

  // Token ids: one list, and a list of lists (mixed with text), give the text's vectors.
  const std::vector<int32_t> ids0 = tok_->encode(texts[0], true, true), ids1 = tok_->encode(texts[1], true, true);
  EXPECT_EQ(floats(embed({{"input", ids0}})["data"][0]["embedding"]), v[0]);
  const json mixed = embed({{"input", json::array({json(ids1), json(texts[0])})}});
  ASSERT_EQ(mixed["data"].size(), 2u);
  EXPECT_EQ(floats(mixed["data"][0]["embedding"]), v[1]);
  EXPECT_EQ(floats(mixed["data"][1]["embedding"]), v[0]);

  // base64: the same floats.
  const json b = embed({{"input", texts[0]}, {"encoding_format", "base64"}});
  ASSERT_TRUE(b["data"][0]["embedding"].is_string());
  EXPECT_EQ(decode_base64_floats(b["data"][0]["embedding"].get<std::string>()), v[0]);
  // embd_normalize -1: the raw mean, whose direction is the same.
  const std::vector<float> raw = floats(embed({{"input", texts[0]}, {"embd_normalize", -1}})["data"][0]["embedding"]);
  double n2 = 0.0;
  for (float x : raw) n2 += static_cast<double>(x) * x;
  EXPECT_GT(std::fabs(std::sqrt(n2) - 1.0), 1e-3);
  for (size_t i = 0; i < raw.size(); ++i) EXPECT_NEAR(raw[i] / std::sqrt(n2), v[0][i], 1e-5);

  // llama-server's /embedding (and /embeddings): [{index, embedding: [[...]]}], from input or content.
  for (const char* path : {"/embedding", "/embeddings"}) {
    const json l = embed({{"content", texts[0]}}, 200, path);
    ASSERT_TRUE(l.is_array()) << l;
    ASSERT_EQ(l.size(), 1u);
    EXPECT_EQ(l[0]["index"], 0);
    ASSERT_EQ(l[0]["embedding"].size(), 1u);
    EXPECT_EQ(floats(l[0]["embedding"][0]), v[0]) << path;
  }
}

TEST_F(Embeddings, BadInputIs400NamingInput) {
  const std::string too_long = [] {
    std::string s;
    for (int i = 0; i < 200; ++i) s += "word ";
    return s;
  }();
  for (const json& body : {json::object(), json{{"input", ""}}, json{{"input", json::array()}}, json{{"input", 5}},
                           json{{"input", nullptr}}, json{{"input", json::array({json::object()})}},
                           json{{"input", json::array({"ok", 3.5})}}, json{{"input", json::array({json::array()})}},
                           json{{"input", json::array({"ok", ""})}}, json{{"input", json::array({99999999})}},
                           json{{"input", json::array({json::array({1, -1})})}}, json{{"input", too_long}},
                           json{{"input", std::vector<int32_t>(kCtx + 1, 1)}}}) {
    const json r = embed(body, 400);
    EXPECT_EQ(error_param(r), "input") << body.dump().substr(0, 200) << " -> " << r.dump();
    EXPECT_NE(r["error"].value("message", "").find("input"), std::string::npos) << r.dump();
  }
  EXPECT_EQ(error_param(embed({{"input", "x"}, {"encoding_format", "hex"}}, 400)), "encoding_format");
  EXPECT_EQ(error_param(embed({{"input", "x"}, {"embd_normalize", "two"}}, 400)), "embd_normalize");
  EXPECT_EQ(error_param(embed({{"input", "x"}, {"dimensions", 3}}, 400)), "dimensions");
  // Not JSON at all.
  auto c = srv_->http();
  auto r = c->Post("/v1/embeddings", "{nope", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
}

// The model's own pooling (none: a generative model): /v1/embeddings refuses it, /embedding
// returns one unnormalized vector per token, the engine's final-norm hidden states.
TEST(EmbeddingsPoolingNone, PerTokenOnLlamaRouteRefusedOnOpenAi) {
  ServingProcess srv(server_args({"--embeddings"}));
  auto c = srv.http();
  int status = 0;
  const json r = post_json(*c, "/v1/embeddings", {{"input", "hello"}}, &status);
  EXPECT_EQ(status, 400) << r;
  EXPECT_NE(r["error"].value("message", "").find("--pooling"), std::string::npos) << r;

  const std::string text = "hello world";
  const json l = post_json(*c, "/embedding", {{"input", text}}, &status);
  ASSERT_EQ(status, 200) << l;
  auto gguf = GgufFile::open(model_path(kModel));
  const auto ids = Tokenizer::from_gguf(*gguf)->encode(text, true, true);
  EmbedderOptions o;
  o.n_ctx = kCtx;
  o.n_threads = 1;
  const auto rows = Embedder::open(model_path(kModel), o)->embed(ids);
  ASSERT_EQ(l[0]["embedding"].size(), ids.size());
  for (size_t t = 0; t < ids.size(); ++t) {
    const std::vector<float> got = floats(l[0]["embedding"][t]);
    ASSERT_EQ(got.size(), rows[t].size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], rows[t][i], 1e-5) << t << " " << i;
  }
}

TEST(EmbeddingsOff, RoutesAnswer501SayingHowToTurnThemOn) {
  ServingProcess srv(server_args({}));
  auto c = srv.http();
  for (const char* path : {"/v1/embeddings", "/embedding", "/embeddings"}) {
    int status = 0;
    const json r = post_json(*c, path, {{"input", "hello"}}, &status);
    EXPECT_EQ(status, 501) << path << " " << r;
    EXPECT_NE(r["error"].value("message", "").find("--embeddings"), std::string::npos) << r;
  }
}

// Where the coordinator has no whole model on its CPU, --embeddings is refused at start by name.
// Beside stages started elsewhere (here: attach, none started) the coordinator still embeds on
// its own CPU, the engine's vector within 1e-5, while generation waits for the stages.
TEST(EmbeddingsElsewhere, BesideOtherStagesTheCoordinatorEmbedsOnItsCpu) {
  ServingProcess srv({"-m", model_path(kModel), "--backend", "attach", "--embeddings", "--pooling", "mean", "--ctx",
                      std::to_string(kCtx), "--link", "127.0.0.1:0"},
                     {"PIPELLM_LINK_SECRET=0123456789abcdef0123"}, /*serving=*/false);
  EXPECT_NE(srv.log().find("embeddings run on this machine's CPU"), std::string::npos) << srv.log();
  auto c = srv.http();
  int status = 0;
  const json j = post_json(*c, "/v1/embeddings", {{"input", "The jury said"}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EmbedderOptions o;
  o.n_ctx = kCtx;
  o.n_threads = 1;
  o.pooling = Pooling::Mean;
  const auto engine = Embedder::open(model_path(kModel), o);
  const auto tok = Tokenizer::from_gguf(*GgufFile::open(model_path(kModel)));
  std::vector<float> want = engine->embed(tok->encode("The jury said", true, true)).front();
  normalize_embedding(want.data(), static_cast<int64_t>(want.size()), 2);
  const std::vector<float> got = floats(j["data"][0]["embedding"]);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
  auto h = c->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);  // no stages: generation is not available
}

}  // namespace
}  // namespace pipellm::test

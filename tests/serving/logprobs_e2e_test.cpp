// Per-token log-probabilities through a real pipellm-coordinator (in-process CPU head, fixture
// model) on both front doors, against an independent reference: the plain CPU forward pass
// (CpuModel, one sequence) over the prompt and the served ids, log-softmax of its logits in
// float64 (no penalties, so the raw logits are the distribution the sampler reports). Greedy
// completions and seeded sampled chat, streamed and not; gRPC token_logprobs parallel to
// token_ids; the top alternatives (chat top_logprobs, completions logprobs N, /completion
// n_probs, gRPC top_logprobs) against the largest of the reference's log-softmax; bad counts
// refused by name; null when not asked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "coordinator/text_stream.h"
#include "engine/cpu/cpu_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/serving/serving_process.h"

namespace pipellm::test {
namespace {

using nlohmann::json;
namespace v1 = pipellm::v1;
constexpr const char* kModel = "tiny-llama-Q8_0";
constexpr int kCtx = 512;
constexpr double kTol = 1e-3;  // the served steps round the logits a little differently


// A stream:true response's chunks (the usage chunk apart).
struct Streamed {
  std::vector<json> chunks;
  json usage;
  std::string text;
};

Streamed post_stream(httplib::Client& c, const std::string& path, json body) {
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  Streamed s;
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  if (!r || r->status != 200) {
    ADD_FAILURE() << path << ": " << (r ? r->body : httplib::to_string(r.error()));
    return s;
  }
  for (const auto& p : sse_payloads(r->body)) {
    if (p == "[DONE]") break;
    json j = json::parse(p);
    if (j["choices"].empty()) {
      s.usage = j["usage"];
      continue;
    }
    const json& ch = j["choices"][0];
    if (ch.contains("delta")) {
      if (ch["delta"].contains("content")) s.text += ch["delta"]["content"].get<std::string>();
    } else {
      s.text += ch["text"].get<std::string>();
    }
    s.chunks.push_back(std::move(j));
  }
  return s;
}

// The `key` array of every chunk's choices[0].logprobs, joined in order (chunks without one skipped).
json streamed_logprobs(const Streamed& s, const char* key) {
  json all = json::array();
  for (const json& ch : s.chunks) {
    const json& l = ch["choices"][0]["logprobs"];
    if (l.is_null()) continue;
    for (const auto& x : l[key]) all.push_back(x);
  }
  return all;
}

struct GrpcOut {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::vector<std::vector<std::pair<int32_t, float>>> top;  // per id: alternatives (id, logprob)
  int chunks_with_ids = 0;
};

GrpcOut generate(v1::PipeLLM::Stub& stub, const v1::GenerateRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse m;
  GrpcOut o;
  while (reader->Read(&m)) {
    if (!m.has_chunk()) continue;
    const auto& c = m.chunk();
    o.text += c.text();
    if (c.token_ids_size() > 0) ++o.chunks_with_ids;
    if (c.token_logprobs_size() > 0) {
      EXPECT_EQ(c.token_logprobs_size(), c.token_ids_size()) << "token_logprobs parallel to token_ids";
    }
    if (c.top_logprobs_size() > 0) {
      EXPECT_EQ(c.top_logprobs_size(), c.token_ids_size()) << "top_logprobs parallel to token_ids";
    }
    o.ids.insert(o.ids.end(), c.token_ids().begin(), c.token_ids().end());
    o.logprobs.insert(o.logprobs.end(), c.token_logprobs().begin(), c.token_logprobs().end());
    for (const auto& alts : c.top_logprobs()) {
      o.top.emplace_back();
      for (const auto& a : alts.alternatives()) o.top.back().push_back({a.id(), a.logprob()});
    }
  }
  const grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  return o;
}

class ServingLogprobs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    srv_ = new ServingProcess({"--model", model_path(kModel), "--backend", "inprocess", "--ctx", std::to_string(kCtx),
                               "--slots", "2", "--threads", "1"});
    CpuModelOptions mo;
    mo.n_threads = 1;
    mo.stage.n_ctx = kCtx;
    mo.stage.n_slots = 1;
    model_ = CpuModel::open(model_path(kModel), mo).release();
    tok_ = Tokenizer::from_gguf(model_->file()).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete model_;
    delete srv_;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "coordinator log:\n" << srv_->log() << std::endl;
  }

  // float64 log-softmax of the plain forward pass's logits before each of `ids`, and the largest
  // log-probability at that step.
  struct Reference {
    std::vector<double> logprob, best;
    std::vector<std::vector<double>> all;  // every token's, at each step
  };
  static Reference reference(const std::vector<int32_t>& prompt, const std::vector<int32_t>& ids) {
    Reference r;
    std::vector<float> logits;
    Stage& st = model_->stage();
    st.forward(Batch::sequence(prompt, 0, 0), logits);
    auto pos = static_cast<int32_t>(prompt.size());
    for (int32_t id : ids) {
      double mx = logits[0];
      for (float v : logits) mx = std::max(mx, static_cast<double>(v));
      double z = 0;
      for (float v : logits) z += std::exp(static_cast<double>(v) - mx);
      r.logprob.push_back(static_cast<double>(logits[static_cast<size_t>(id)]) - mx - std::log(z));
      r.best.push_back(-std::log(z));
      r.all.emplace_back();
      for (float v : logits) r.all.back().push_back(static_cast<double>(v) - mx - std::log(z));
      st.forward(Batch::sequence({id}, pos++, 0), logits);
    }
    return r;
  }

  // A token's piece as the responses render it: its own text, the first one's leading space
  // dropped as decode() does.
  static std::string piece(int32_t id, bool first) {
    std::string p = tok_->render_piece(id);
    if (first && tok_->strips_first_space() && !p.empty() && p[0] == ' ') p.erase(0, 1);
    return p;
  }

  static void expect_reference(const std::vector<int32_t>& prompt, const std::vector<int32_t>& ids,
                               const std::vector<float>& got, bool greedy) {
    ASSERT_EQ(got.size(), ids.size());
    const Reference ref = reference(prompt, ids);
    for (size_t k = 0; k < ids.size(); ++k) {
      SCOPED_TRACE("token " + std::to_string(k));
      EXPECT_LE(got[k], 0.0f);
      EXPECT_NEAR(got[k], ref.logprob[k], kTol);
      if (greedy) {
        EXPECT_GE(ref.logprob[k], ref.best[k] - kTol) << "greedy chose the most likely token";
      }
    }
  }

  // gRPC's alternatives against the reference: at each step n entries, sorted descending, the
  // k-th one the k-th largest reference value and its id's own reference value (within kTol:
  // near-ties may swap), the chosen token's entry equal to its logprob.
  static void expect_top_reference(const std::vector<int32_t>& prompt, const GrpcOut& out, size_t n) {
    ASSERT_EQ(out.top.size(), out.ids.size());
    const Reference ref = reference(prompt, out.ids);
    for (size_t k = 0; k < out.ids.size(); ++k) {
      SCOPED_TRACE("token " + std::to_string(k));
      std::vector<double> sorted = ref.all[k];
      std::sort(sorted.begin(), sorted.end(), std::greater<double>());
      ASSERT_EQ(out.top[k].size(), n);
      for (size_t i = 0; i < n; ++i) {
        const auto [id, lp] = out.top[k][i];
        EXPECT_NEAR(lp, sorted[i], kTol) << "rank " << i;
        EXPECT_NEAR(lp, ref.all[k][static_cast<size_t>(id)], kTol) << "rank " << i << " id " << id;
        if (i > 0) {
          EXPECT_GE(out.top[k][i - 1].second, lp);
        }
        if (id == out.ids[k]) {
          EXPECT_EQ(lp, out.logprobs[k]) << "the chosen token's entry is its logprob";
        }
      }
    }
  }

  static std::vector<int32_t> chat_prompt(httplib::Client& c, const json& messages) {
    const json t = post_json(c, "/tokenize", {{"messages", messages}});
    std::vector<int32_t> prompt;
    for (const auto& x : t["tokens"]) prompt.push_back(x.get<int32_t>());
    return prompt;
  }

  static ServingProcess* srv_;
  static CpuModel* model_;
  static Tokenizer* tok_;
};
ServingProcess* ServingLogprobs::srv_ = nullptr;
CpuModel* ServingLogprobs::model_ = nullptr;
Tokenizer* ServingLogprobs::tok_ = nullptr;

TEST_F(ServingLogprobs, GreedyCompletionEqualsReference) {
  const std::string prompt = "Once upon a time";
  const int n = 16;
  // cache_prompt false: the streamed run repeats the prompt, whose cached prefix would match the
  // first run's logits within rounding only; fed whole, both runs are bit-equal.
  const json body = {{"prompt", prompt}, {"max_tokens", n},        {"temperature", 0},
                     {"ignore_eos", true}, {"logprobs", 0},     {"cache_prompt", false}};
  auto c = srv_->http();
  int status = 0;
  const json j = post_json(*c, "/v1/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  const json& lp = j["choices"][0]["logprobs"];
  ASSERT_TRUE(lp.is_object()) << j.dump();
  EXPECT_TRUE(lp["top_logprobs"].is_null());
  ASSERT_EQ(lp["tokens"].size(), static_cast<size_t>(n));
  ASSERT_EQ(lp["token_logprobs"].size(), static_cast<size_t>(n));
  ASSERT_EQ(lp["text_offset"].size(), static_cast<size_t>(n));
  EXPECT_EQ(j["usage"]["completion_tokens"], n);

  // The ids, over gRPC (the same greedy request): token_logprobs parallel to token_ids, the same
  // values as HTTP's.
  v1::GenerateRequest g = grpc_request(prompt, 0.0f, 0, n);  // greedy, ignore_eos
  g.mutable_sampling()->set_logprobs(true);
  const GrpcOut out = generate(srv_->stub(), g);
  ASSERT_EQ(out.ids.size(), static_cast<size_t>(n));
  ASSERT_EQ(out.logprobs.size(), out.ids.size());
  EXPECT_EQ(out.text, j["choices"][0]["text"]);
  const std::string text = j["choices"][0]["text"];
  const bool plain = text == tok_->decode(out.ids) &&
                     std::all_of(text.begin(), text.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80; });
  size_t bytes = 0;
  for (int k = 0; k < n; ++k) {
    SCOPED_TRACE(k);
    EXPECT_NEAR(lp["token_logprobs"][k].get<float>(), out.logprobs[k], 1e-6);
    const std::string p = piece(out.ids[k], k == 0);
    EXPECT_EQ(lp["tokens"][k], coord::valid_utf8(p));
    if (plain) {  // ASCII: characters are bytes
      EXPECT_EQ(lp["text_offset"][k].get<size_t>(), bytes);
    }
    bytes += p.size();
  }
  expect_reference(tok_->encode(prompt, true, false), out.ids, out.logprobs, true);

  // Streamed: the chunks carry their tokens' logprobs, together the same list.
  const Streamed s = post_stream(*c, "/v1/completions", body);
  EXPECT_EQ(s.text, text);
  json tokens = json::array(), lps = json::array(), offsets = json::array();
  int text_without_tokens = 0;  // at most the flush at the end (text held back by the decoder)
  for (const json& ch : s.chunks) {
    const json& l = ch["choices"][0]["logprobs"];
    if (!ch["choices"][0]["text"].get<std::string>().empty() && l.is_null()) ++text_without_tokens;
    if (l.is_null()) continue;
    for (const auto& x : l["tokens"]) tokens.push_back(x);
    for (const auto& x : l["token_logprobs"]) lps.push_back(x);
    for (const auto& x : l["text_offset"]) offsets.push_back(x);
  }
  EXPECT_LE(text_without_tokens, 1);
  EXPECT_EQ(s.usage["completion_tokens"], n);
  EXPECT_EQ(tokens, lp["tokens"]);
  EXPECT_EQ(lps, lp["token_logprobs"]);
  EXPECT_EQ(offsets, lp["text_offset"]);
}

TEST_F(ServingLogprobs, SeededChatEqualsReference) {
  const json messages = {{{"role", "user"}, {"content", "Tell me a story"}}};
  const int n = 16;
  // Sampled; no penalties (the defaults), so the reported distribution is the raw logits'.
  const json body = {{"messages", messages}, {"max_tokens", n}, {"temperature", 0.9}, {"seed", 7}, {"top_k", 20},
                     {"ignore_eos", true}, {"logprobs", true}, {"cache_prompt", false}};
  auto c = srv_->http();
  int status = 0;
  const json j = post_json(*c, "/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_TRUE(content.is_array()) << j.dump();
  ASSERT_EQ(content.size(), static_cast<size_t>(n));
  EXPECT_EQ(j["usage"]["completion_tokens"], n);
  std::string joined;
  for (const json& e : content) {
    EXPECT_EQ(e.size(), 4u) << e.dump();  // token logprob bytes top_logprobs
    EXPECT_TRUE(e["token"].is_string());
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    EXPECT_EQ(e["top_logprobs"], json::array());
    for (const auto& b : e["bytes"]) joined += static_cast<char>(b.get<int>());
  }
  const std::string text = j["choices"][0]["message"]["content"];
  EXPECT_EQ(coord::valid_utf8(joined), text) << "the tokens' bytes make up the content";

  // The same request over gRPC: the ids the reference replays, the same values.
  v1::GenerateRequest g;
  auto* m0 = g.mutable_chat()->add_messages();
  m0->set_role("user");
  m0->set_content("Tell me a story");
  g.set_max_tokens(n);
  g.set_ignore_eos(true);
  g.mutable_sampling()->set_temperature(0.9f);
  g.mutable_sampling()->set_seed(7);
  g.mutable_sampling()->set_top_k(20);
  g.mutable_sampling()->set_logprobs(true);
  g.mutable_sampling()->set_cache_prompt(false);
  const GrpcOut out = generate(srv_->stub(), g);
  ASSERT_EQ(out.ids.size(), static_cast<size_t>(n));
  EXPECT_EQ(out.text, text);
  for (int k = 0; k < n; ++k) {
    EXPECT_NEAR(content[k]["logprob"].get<float>(), out.logprobs[k], 1e-6) << k;
    EXPECT_EQ(content[k]["token"], coord::valid_utf8(piece(out.ids[k], k == 0))) << k;
  }
  const json t = post_json(*c, "/tokenize", {{"messages", messages}});
  std::vector<int32_t> prompt;
  for (const auto& x : t["tokens"]) prompt.push_back(x.get<int32_t>());
  ASSERT_EQ(static_cast<int>(prompt.size()), j["usage"]["prompt_tokens"].get<int>());
  expect_reference(prompt, out.ids, out.logprobs, false);

  // Streamed: each chunk with content carries its tokens; together the same list.
  const Streamed s = post_stream(*c, "/v1/chat/completions", body);
  EXPECT_EQ(s.text, text);
  ASSERT_FALSE(s.chunks.empty());
  EXPECT_TRUE(s.chunks[0]["choices"][0]["logprobs"].is_null()) << "the role chunk has no tokens";
  json streamed = json::array();
  int text_without_tokens = 0;
  for (const json& ch : s.chunks) {
    const json& l = ch["choices"][0]["logprobs"];
    const json& delta = ch["choices"][0]["delta"];
    if (delta.contains("content") && !delta["content"].get<std::string>().empty() && l.is_null()) ++text_without_tokens;
    if (l.is_null()) continue;
    EXPECT_FALSE(l["content"].empty()) << ch.dump();
    for (const auto& e : l["content"]) streamed.push_back(e);
  }
  EXPECT_LE(text_without_tokens, 1);
  EXPECT_EQ(s.usage["completion_tokens"], n);
  EXPECT_EQ(streamed, content);
}

// With a stop string: the tokens of the response's ids (the stop's own too), as many as
// completion_tokens and as gRPC's ids; offsets within the returned text.
TEST_F(ServingLogprobs, StopStringKeepsTheResponsesTokens) {
  auto c = srv_->http();
  json body = {{"prompt", "abc def"}, {"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}};
  const std::string full = post_json(*c, "/v1/completions", body)["choices"][0]["text"];
  ASSERT_GE(full.size(), 8u);
  const std::string stop = full.substr(4, 2);
  body["stop"] = stop;
  body["logprobs"] = 0;
  const json j = post_json(*c, "/v1/completions", body);
  ASSERT_EQ(j["choices"][0]["finish_reason"], "stop") << j.dump();
  const std::string text = j["choices"][0]["text"];
  const json& lp = j["choices"][0]["logprobs"];
  const int n = j["usage"]["completion_tokens"];
  EXPECT_LT(n, 24);
  ASSERT_EQ(lp["token_logprobs"].size(), static_cast<size_t>(n));
  for (const auto& o : lp["text_offset"]) EXPECT_LE(o.get<size_t>(), coord::valid_utf8(text).size());
  v1::GenerateRequest g;
  g.set_text("abc def");
  g.set_max_tokens(24);
  g.set_ignore_eos(true);
  g.add_stop(stop);
  g.mutable_sampling()->set_temperature(0.0f);
  g.mutable_sampling()->set_logprobs(true);
  const GrpcOut out = generate(srv_->stub(), g);
  EXPECT_EQ(out.ids.size(), static_cast<size_t>(n));
  EXPECT_EQ(out.logprobs.size(), out.ids.size());
  const Streamed s = post_stream(*c, "/v1/completions", body);
  EXPECT_EQ(streamed_logprobs(s, "token_logprobs"), lp["token_logprobs"]);
}

// Chat top_logprobs 5 (seeded sampling): over gRPC (ids) against the reference; over HTTP the
// same alternatives as {token, logprob, bytes}, streamed and not.
TEST_F(ServingLogprobs, ChatTopLogprobsAreTheLargestOfTheReference) {
  const json messages = {{{"role", "user"}, {"content", "Tell me a story"}}};
  const int n = 10;
  const size_t top_n = 5;
  const json body = {{"messages", messages}, {"max_tokens", n},    {"temperature", 0.9},     {"seed", 3},
                     {"ignore_eos", true},   {"logprobs", true}, {"top_logprobs", top_n}, {"cache_prompt", false}};
  v1::GenerateRequest g;
  auto* m0 = g.mutable_chat()->add_messages();
  m0->set_role("user");
  m0->set_content("Tell me a story");
  g.set_max_tokens(n);
  g.set_ignore_eos(true);
  g.mutable_sampling()->set_temperature(0.9f);
  g.mutable_sampling()->set_seed(3);
  g.mutable_sampling()->set_logprobs(true);
  g.mutable_sampling()->set_cache_prompt(false);
  g.mutable_sampling()->set_top_logprobs(static_cast<int32_t>(top_n));
  const GrpcOut out = generate(srv_->stub(), g);
  ASSERT_EQ(out.ids.size(), static_cast<size_t>(n));
  auto c = srv_->http();
  const std::vector<int32_t> prompt = chat_prompt(*c, messages);
  expect_top_reference(prompt, out, top_n);

  int status = 0;
  const json j = post_json(*c, "/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), static_cast<size_t>(n)) << j.dump();
  for (int k = 0; k < n; ++k) {
    SCOPED_TRACE(k);
    const json& e = content[k];
    EXPECT_EQ(e["token"], coord::valid_utf8(piece(out.ids[k], k == 0)));
    EXPECT_NEAR(e["logprob"].get<float>(), out.logprobs[k], 1e-6);
    const json& top = e["top_logprobs"];
    ASSERT_EQ(top.size(), top_n) << e.dump();
    for (size_t i = 0; i < top_n; ++i) {
      const auto [id, lp] = out.top[k][i];
      EXPECT_EQ(top[i].size(), 3u) << top[i].dump();  // token logprob bytes
      const std::string p = piece(id, k == 0);
      EXPECT_EQ(top[i]["token"], coord::valid_utf8(p));
      EXPECT_NEAR(top[i]["logprob"].get<float>(), lp, 1e-6);
      json bytes = json::array();
      for (char ch : p) bytes.push_back(static_cast<int>(static_cast<unsigned char>(ch)));
      EXPECT_EQ(top[i]["bytes"], bytes);
    }
  }
  const Streamed s = post_stream(*c, "/v1/chat/completions", body);
  EXPECT_EQ(streamed_logprobs(s, "content"), content);
}

// Completions logprobs 3 (greedy): top_logprobs is one {text: logprob} per token, the reference's
// three largest (the chosen one, the most likely, among them).
TEST_F(ServingLogprobs, CompletionsLogprobsNListTheLargestOfTheReference) {
  const std::string prompt = "Once upon a time";
  const int n = 8;
  v1::GenerateRequest g = grpc_request(prompt, 0.0f, 0, n);  // greedy, ignore_eos
  g.mutable_sampling()->set_logprobs(true);
  g.mutable_sampling()->set_top_logprobs(3);
  const GrpcOut out = generate(srv_->stub(), g);
  ASSERT_EQ(out.ids.size(), static_cast<size_t>(n));
  expect_top_reference(tok_->encode(prompt, true, false), out, 3);

  auto c = srv_->http();
  const json body = {{"prompt", prompt}, {"max_tokens", n}, {"temperature", 0}, {"ignore_eos", true}, {"logprobs", 3}};
  int status = 0;
  const json j = post_json(*c, "/v1/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  const json& lp = j["choices"][0]["logprobs"];
  ASSERT_EQ(lp["top_logprobs"].size(), static_cast<size_t>(n)) << lp.dump();
  for (int k = 0; k < n; ++k) {
    SCOPED_TRACE(k);
    const json& top = lp["top_logprobs"][k];
    ASSERT_TRUE(top.is_object());
    std::map<std::string, float> want;
    for (const auto& [id, v] : out.top[k]) want.emplace(coord::valid_utf8(piece(id, k == 0)), v);
    EXPECT_EQ(top.size(), want.size()) << top.dump();
    for (const auto& [text, v] : want) {
      ASSERT_TRUE(top.contains(text)) << text << " in " << top.dump();
      EXPECT_NEAR(top[text].get<float>(), v, 1e-6);
    }
    // Greedy: the chosen token is the most likely, so listed with its own logprob.
    EXPECT_NEAR(top[lp["tokens"][k].get<std::string>()].get<float>(), lp["token_logprobs"][k].get<float>(), 1e-6);
  }
  const Streamed s = post_stream(*c, "/v1/completions", body);
  EXPECT_EQ(streamed_logprobs(s, "top_logprobs"), lp["top_logprobs"]);
}

// llama-server's /completion n_probs 3: completion_probabilities, one {id, token, bytes,
// logprob, top_logprobs: [{id, token, bytes, logprob} x3]} per generated token, streamed and not.
TEST_F(ServingLogprobs, LlamaCompletionNProbsShape) {
  const std::string prompt = "Once upon a time";
  const int n = 6;
  v1::GenerateRequest g = grpc_request(prompt, 0.0f, 0, n);  // greedy, ignore_eos
  g.mutable_sampling()->set_logprobs(true);
  g.mutable_sampling()->set_top_logprobs(3);
  const GrpcOut out = generate(srv_->stub(), g);
  ASSERT_EQ(out.ids.size(), static_cast<size_t>(n));

  auto c = srv_->http();
  const json body = {{"prompt", prompt}, {"n_predict", n}, {"temperature", 0}, {"ignore_eos", true}, {"n_probs", 3}};
  int status = 0;
  const json j = post_json(*c, "/completion", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["generation_settings"]["n_probs"], 3);
  const json& probs = j["completion_probabilities"];
  ASSERT_EQ(probs.size(), static_cast<size_t>(n)) << j.dump();
  const auto expect_entry = [](const json& e, int32_t id, float lp) {
    EXPECT_EQ(e["id"], id);
    const std::string p = tok_->render_piece(id);
    EXPECT_EQ(e["token"], coord::valid_utf8(p));
    json bytes = json::array();
    for (char ch : p) bytes.push_back(static_cast<int>(static_cast<unsigned char>(ch)));
    EXPECT_EQ(e["bytes"], bytes);
    EXPECT_NEAR(e["logprob"].get<float>(), lp, 1e-6);
  };
  for (int k = 0; k < n; ++k) {
    SCOPED_TRACE(k);
    const json& e = probs[k];
    EXPECT_EQ(e.size(), 5u) << e.dump();  // id token bytes logprob top_logprobs
    expect_entry(e, out.ids[k], out.logprobs[k]);
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(e["top_logprobs"][i].size(), 4u);
      expect_entry(e["top_logprobs"][i], out.top[k][i].first, out.top[k][i].second);
    }
  }
  // Streamed: each event carries its tokens' entries; together the same list.
  json sb = body;
  sb["stream"] = true;
  auto r = c->Post("/completion", sb.dump(), "application/json");
  ASSERT_TRUE(r && r->status == 200);
  json streamed = json::array();
  for (const auto& p : sse_payloads(r->body)) {
    const json ev = json::parse(p);
    ASSERT_TRUE(ev.contains("completion_probabilities")) << ev.dump();
    for (const auto& e : ev["completion_probabilities"]) streamed.push_back(e);
  }
  EXPECT_EQ(streamed, probs);
  // Without n_probs: no completion_probabilities.
  json plain = body;
  plain.erase("n_probs");
  EXPECT_FALSE(post_json(*c, "/completion", plain).contains("completion_probabilities"));
}

TEST_F(ServingLogprobs, BadCountsRefusedByName) {
  auto c = srv_->http();
  const json msgs = {{{"role", "user"}, {"content", "hi"}}};
  struct Bad {
    const char* path;
    json body;
    const char* param;
    const char* code;
  };
  const Bad cases[] = {
      {"/v1/chat/completions", {{"messages", msgs}, {"logprobs", true}, {"top_logprobs", 21}}, "top_logprobs",
       "integer_above_max_value"},
      {"/v1/chat/completions", {{"messages", msgs}, {"logprobs", true}, {"top_logprobs", -1}}, "top_logprobs",
       "integer_below_min_value"},
      {"/v1/chat/completions", {{"messages", msgs}, {"top_logprobs", 2}}, "top_logprobs", "invalid_parameter"},
      {"/v1/chat/completions", {{"messages", msgs}, {"logprobs", false}, {"top_logprobs", 2}}, "top_logprobs",
       "invalid_parameter"},
      {"/v1/completions", {{"prompt", "hi"}, {"logprobs", 21}}, "logprobs", "integer_above_max_value"},
      {"/v1/completions", {{"prompt", "hi"}, {"logprobs", -1}, {"stream", true}}, "logprobs", "integer_below_min_value"},
      {"/completion", {{"prompt", "hi"}, {"n_probs", 21}}, "n_probs", "invalid_parameter"},
      {"/completion", {{"prompt", "hi"}, {"n_probs", 2}, {"post_sampling_probs", true}}, "post_sampling_probs",
       "unsupported_parameter"},
  };
  for (const auto& b : cases) {
    SCOPED_TRACE(b.body.dump());
    int status = 0;
    const json j = post_json(*c, b.path, b.body, &status);
    EXPECT_EQ(status, 400);
    EXPECT_EQ(j["error"]["param"], b.param);
    EXPECT_EQ(j["error"]["code"], b.code);
    EXPECT_NE(j["error"]["message"].get<std::string>().find(b.param), std::string::npos);
  }
  for (int bad : {21, -1}) {
    v1::GenerateRequest g;
    g.set_text("hi");
    g.set_max_tokens(2);
    g.mutable_sampling()->set_logprobs(true);
    g.mutable_sampling()->set_top_logprobs(bad);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = srv_->stub().Generate(&ctx, g);
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
    }
    const grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_NE(st.error_message().find("top_logprobs"), std::string::npos) << st.error_message();
  }
}

TEST_F(ServingLogprobs, NullWhenNotAsked) {
  auto c = srv_->http();
  const json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 4}, {"ignore_eos", true}};
  const json cmpl = {{"prompt", "hi"}, {"max_tokens", 4}, {"ignore_eos", true}};
  EXPECT_TRUE(post_json(*c, "/v1/chat/completions", chat)["choices"][0]["logprobs"].is_null());
  EXPECT_TRUE(post_json(*c, "/v1/completions", cmpl)["choices"][0]["logprobs"].is_null());
  json off = chat;
  off["logprobs"] = false;
  off["top_logprobs"] = 0;
  EXPECT_TRUE(post_json(*c, "/v1/chat/completions", off)["choices"][0]["logprobs"].is_null());
  for (const auto& [path, body] : {std::pair{"/v1/chat/completions", chat}, std::pair{"/v1/completions", cmpl}}) {
    const Streamed s = post_stream(*c, path, body);
    ASSERT_FALSE(s.chunks.empty());
    for (const json& ch : s.chunks) EXPECT_TRUE(ch["choices"][0]["logprobs"].is_null()) << ch.dump();
  }
  v1::GenerateRequest g;
  g.set_text("hi");
  g.set_max_tokens(4);
  g.set_ignore_eos(true);
  const GrpcOut out = generate(srv_->stub(), g);
  EXPECT_EQ(out.ids.size(), 4u);
  EXPECT_TRUE(out.logprobs.empty());
}

}  // namespace
}  // namespace pipellm::test

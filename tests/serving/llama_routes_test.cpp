// llama-server's routes as shapes, field by field against hand-written expectations: a
// /completion body read into the shared request type (n_predict, seed -1, negative temperature,
// ignored and refused llama.cpp fields), stop_type, timings, the final object and stream
// chunks, /props, /slots, /health (503 "Loading model") and the OpenAI model object.
#include <gtest/gtest.h>

#include "coordinator/http_llama_routes.h"
#include "tests/serving/http_refusal.h"

namespace pipellm::coord {
namespace {

using nlohmann::json;

LlamaCompletionRequest parse(const char* body) { return parse_llama_completion(json::parse(body)); }

TEST(LlamaCompletionParse, Fields) {
  const LlamaCompletionRequest r = parse(R"({"prompt":"Hello","n_predict":7,"temperature":0.5,"top_k":12,"top_p":0.9,
      "min_p":0.1,"repeat_penalty":1.1,"repeat_last_n":32,"presence_penalty":0.5,"frequency_penalty":-0.5,"seed":42,
      "stop":["a","bc"],"stream":true,"ignore_eos":true,"return_tokens":true})");
  const GenerateInput& in = r.request.input;
  EXPECT_EQ(in.kind, GenerateInput::PromptKind::Text);
  EXPECT_EQ(in.text, "Hello");
  EXPECT_EQ(*in.max_tokens, 7);
  EXPECT_FALSE(in.until_context);
  EXPECT_FLOAT_EQ(*in.temperature, 0.5f);
  EXPECT_EQ(*in.top_k, 12);
  EXPECT_FLOAT_EQ(*in.top_p, 0.9f);
  EXPECT_FLOAT_EQ(*in.min_p, 0.1f);
  EXPECT_FLOAT_EQ(*in.repetition_penalty, 1.1f);
  EXPECT_EQ(*in.penalty_last_n, 32);
  EXPECT_FLOAT_EQ(*in.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(*in.frequency_penalty, -0.5f);
  EXPECT_EQ(*in.seed, 42u);
  EXPECT_EQ(in.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(in.ignore_eos);
  EXPECT_TRUE(r.request.stream);
  EXPECT_TRUE(r.return_tokens);
  EXPECT_FALSE(r.random_seed);
  EXPECT_TRUE(*in.parse_special);  // llama-server parses special tokens in text prompts
}

TEST(LlamaCompletionParse, NPredict) {
  EXPECT_TRUE(parse(R"({"prompt":"x","n_predict":-1})").request.input.until_context);
  EXPECT_FALSE(parse(R"({"prompt":"x","n_predict":-1})").request.input.max_tokens);
  const GenerateInput absent = parse(R"({"prompt":"x"})").request.input;  // the server's default
  EXPECT_FALSE(absent.max_tokens);
  EXPECT_FALSE(absent.until_context);
  EXPECT_EQ(*parse(R"({"prompt":"x","max_tokens":5})").request.input.max_tokens, 5);         // llama-server's alias
  EXPECT_EQ(*parse(R"({"prompt":"x","n_predict":3,"max_tokens":5})").request.input.max_tokens, 3);  // n_predict wins
  EXPECT_EQ(*parse(R"({"prompt":"x","n_predict":4.0})").request.input.max_tokens, 4);

  ApiError e = refusal_of([] { parse(R"({"prompt":"x","n_predict":0})"); });
  EXPECT_EQ(e.param, "n_predict");
  EXPECT_EQ(e.code, "unsupported_parameter");
  e = refusal_of([] { parse(R"({"prompt":"x","n_predict":-2})"); });
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "n_predict");
  EXPECT_EQ(e.message, "n_predict: must be -1 (to the end of the context) or at least 1 (got -2)");
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","n_predict":"ten"})"); }).param, "n_predict");
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","n_predict":1.5})"); }).param, "n_predict");
}

TEST(LlamaCompletionParse, SeedTemperatureAndPrompts) {
  for (const char* body : {R"({"prompt":"x","seed":-1})", R"({"prompt":"x","seed":4294967295})"}) {
    const LlamaCompletionRequest r = parse(body);
    EXPECT_TRUE(r.random_seed) << body;
    EXPECT_FALSE(r.request.input.seed) << body;
  }
  EXPECT_FLOAT_EQ(*parse(R"({"prompt":"x","temperature":-1})").request.input.temperature, 0.0f);  // greedy
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","seed":-2})"); }).param, "seed");

  const GenerateInput ids = parse(R"({"prompt":[1,2,3]})").request.input;
  EXPECT_EQ(ids.kind, GenerateInput::PromptKind::Tokens);
  EXPECT_EQ(ids.tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":["a","b"]})"); }).code, "unsupported_parameter");  // one prompt
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":[1,"a"]})"); }).param, "prompt");
  EXPECT_EQ(refusal_of([] { parse(R"({"n_predict":3})"); }).param, "prompt");
  EXPECT_EQ(refusal_of([] { parse_llama_completion(json::array()); }).status, 400);
}

TEST(LlamaCompletionParse, LlamaOnlyFieldsIgnoredMissingSamplersRefused) {
  // What llama.cpp's web UI sends besides the prompt: ignored, or off.
  const LlamaCompletionRequest r = parse(R"({"prompt":"x","cache_prompt":true,"n_keep":4,"n_indent":0,
      "samplers":["top_k","temperature"],"timings_per_token":false,"id_slot":-1,"t_max_predict_ms":0,
      "mirostat":0,"mirostat_tau":5,"dynatemp_range":0,"typical_p":1,"xtc_probability":0,"xtc_threshold":0.1,
      "dry_multiplier":0,"dry_base":1.75,"top_n_sigma":-1,"n_probs":0,"min_keep":0,
      "logprobs":5,"echo":true,"n":3,"suffix":"s"})");
  EXPECT_EQ(r.request.input.text, "x");
  EXPECT_FALSE(r.request.input.logprobs);  // OpenAI's field, not /completion's
  for (const char* field : {"mirostat", "dynatemp_range", "typical_p", "xtc_probability", "dry_multiplier", "top_n_sigma"}) {
    json body = {{"prompt", "x"}, {field, std::string(field) == "typical_p" ? 0.5 : 1.0}};
    const ApiError e = refusal_of([&] { parse_llama_completion(body); });
    EXPECT_EQ(e.param, field);
    EXPECT_EQ(e.code, "unsupported_parameter") << field;
  }
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","return_tokens":1})"); }).param, "return_tokens");
  // n_probs: the alternatives per token, with the chosen tokens' logprobs; at most 20; off when <= 0.
  const LlamaCompletionRequest probs = parse(R"({"prompt":"x","n_probs":3,"post_sampling_probs":false})");
  EXPECT_EQ(probs.n_probs, 3);
  EXPECT_TRUE(probs.request.input.logprobs);
  EXPECT_EQ(probs.request.input.top_logprobs, 3);
  EXPECT_EQ(parse(R"({"prompt":"x","n_probs":-1})").request.input.top_logprobs, 0);
  EXPECT_FALSE(parse(R"({"prompt":"x","n_probs":-1})").request.input.logprobs);
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","n_probs":21})"); }).param, "n_probs");
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","n_probs":"3"})"); }).param, "n_probs");
  const ApiError post = refusal_of([] { parse(R"({"prompt":"x","n_probs":2,"post_sampling_probs":true})"); });
  EXPECT_EQ(post.param, "post_sampling_probs");
  EXPECT_EQ(post.code, "unsupported_parameter");
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","logit_bias":[[1,2]]})"); }).param, "logit_bias");
}

TEST(LlamaCompletionParse, GrammarAndJsonSchema) {
  EXPECT_EQ(parse(R"({"prompt":"x","grammar":"root ::= \"a\""})").request.input.grammar, "root ::= \"a\"");
  EXPECT_FALSE(parse(R"({"prompt":"x","json_schema":{"type":"integer"}})").request.input.grammar.empty());
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","grammar":"root ::= ("})"); }).param, "grammar");
  EXPECT_EQ(refusal_of([] { parse(R"({"prompt":"x","json_schema":3})"); }).param, "json_schema");
}

TEST(LlamaCompletionShapes, ErrorsNameNPredict) {
  ApiError e = bad_request("max_tokens", "max_tokens: prompt (10 tokens) + max_tokens (600) exceed the context length 512");
  e = as_llama_error(e);
  EXPECT_EQ(e.param, "n_predict");
  EXPECT_EQ(e.message, "n_predict: prompt (10 tokens) + n_predict (600) exceed the context length 512");
  const ApiError other = as_llama_error(bad_request("top_p", "top_p: max_tokens"));
  EXPECT_EQ(other.message, "top_p: max_tokens");
}

TEST(LlamaCompletionShapes, StopType) {
  EXPECT_STREQ(llama_stop_type(link::FinishReason::Stop, ""), "eos");
  EXPECT_STREQ(llama_stop_type(link::FinishReason::Stop, "\n\n"), "word");
  EXPECT_STREQ(llama_stop_type(link::FinishReason::Length, ""), "limit");
  EXPECT_STREQ(llama_stop_type(link::FinishReason::Cancelled, ""), "none");
}

TEST(LlamaCompletionShapes, Timings) {
  const json t = llama_timings_json({6, 10, 20.0, 4, 8.0});
  EXPECT_EQ(t["cache_n"], 6);
  EXPECT_EQ(t["prompt_n"], 10);
  EXPECT_DOUBLE_EQ(t["prompt_ms"].get<double>(), 20.0);
  EXPECT_DOUBLE_EQ(t["prompt_per_token_ms"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(t["prompt_per_second"].get<double>(), 500.0);
  EXPECT_EQ(t["predicted_n"], 4);
  EXPECT_DOUBLE_EQ(t["predicted_ms"].get<double>(), 8.0);
  EXPECT_DOUBLE_EQ(t["predicted_per_token_ms"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(t["predicted_per_second"].get<double>(), 500.0);
  const json zero = llama_timings_json({0, 3, 0.0, 0, 0.0});  // nothing to divide by: 0, not inf/NaN
  EXPECT_EQ(zero["prompt_per_second"], 0.0);
  EXPECT_EQ(zero["predicted_per_token_ms"], 0.0);
}

TEST(LlamaCompletionShapes, FinalObjectAndChunk) {
  LlamaCompletion c;
  c.model = "m";
  c.content = "one\ntwo";
  c.tokens = {5, 6};
  c.stop_type = "word";
  c.stopping_word = "three";
  c.tokens_evaluated = 9;
  c.tokens_predicted = 3;
  c.tokens_cached = 5;
  c.timings = {5, 4, 4.5, 3, 6.0};
  c.generation_settings = {{"n_ctx", 512}};
  const json j = llama_completion_json(c);
  EXPECT_EQ(j["content"], "one\ntwo");
  EXPECT_EQ(j["tokens"], json::array({5, 6}));
  EXPECT_EQ(j["stop"], true);
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["stop_type"], "word");
  EXPECT_EQ(j["stopping_word"], "three");
  EXPECT_EQ(j["tokens_evaluated"], 9);
  EXPECT_EQ(j["tokens_predicted"], 3);
  EXPECT_EQ(j["tokens_cached"], 5);
  EXPECT_EQ(j["timings"]["cache_n"], 5);
  EXPECT_EQ(j["truncated"], false);
  EXPECT_EQ(j["has_new_line"], true);
  EXPECT_EQ(j["generation_settings"]["n_ctx"], 512);
  EXPECT_EQ(j["timings"]["predicted_n"], 3);
  EXPECT_DOUBLE_EQ(j["timings"]["predicted_per_second"].get<double>(), 500.0);

  EXPECT_EQ(llama_chunk_json("ab", {7}), json::parse(R"({"index":0,"content":"ab","tokens":[7],"stop":false})"));
  EXPECT_EQ(sse_event(llama_chunk_json("", {})), "data: {\"content\":\"\",\"index\":0,\"stop\":false,\"tokens\":[]}\n\n");
}

TEST(LlamaCompletionShapes, GenerationSettings) {
  GenerateInput in;
  in.ignore_eos = true;
  PreparedRequest p;
  p.submit.max_tokens = 33;
  p.submit.sampling.temperature = 0.25f;
  p.submit.sampling.top_k = 7;
  p.submit.sampling.top_p = 0.5f;
  p.submit.sampling.min_p = 0.125f;
  p.submit.sampling.repeat_penalty = 1.5f;
  p.submit.sampling.penalty_last_n = 16;
  p.submit.sampling.seed = 99;
  p.submit.sampling.grammar = "root ::= \"a\"";
  p.stop_strings = {"x"};
  const json j = llama_generation_settings(in, p, 256, true, "m");
  EXPECT_EQ(j["n_ctx"], 256);
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["n_predict"], 33);
  EXPECT_EQ(j["max_tokens"], 33);
  EXPECT_EQ(j["temperature"], 0.25);
  EXPECT_EQ(j["top_k"], 7);
  EXPECT_EQ(j["top_p"], 0.5);
  EXPECT_EQ(j["min_p"], 0.125);
  EXPECT_EQ(j["repeat_penalty"], 1.5);
  EXPECT_EQ(j["repeat_last_n"], 16);
  EXPECT_EQ(j["seed"], 99);
  EXPECT_EQ(j["stop"], json::array({"x"}));
  EXPECT_EQ(j["ignore_eos"], true);
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["grammar"], "root ::= \"a\"");
}

TEST(LlamaServerShapes, PropsAndSlots) {
  LlamaProps p;
  p.model_id = "tiny";
  p.n_ctx = 512;
  p.total_slots = 4;
  p.default_params = {{"temperature", 0.5}};
  p.chat_template = "{{ messages }}";
  p.build_info = "pipellm 1.2.3";
  const json j = llama_props_json(p);
  EXPECT_EQ(j["default_generation_settings"]["n_ctx"], 512);
  EXPECT_EQ(j["default_generation_settings"]["params"]["temperature"], 0.5);
  EXPECT_EQ(j["default_generation_settings"]["is_processing"], false);
  EXPECT_EQ(j["total_slots"], 4);
  EXPECT_EQ(j["model_alias"], "tiny");
  EXPECT_EQ(j["model_path"], "tiny");
  EXPECT_EQ(j["chat_template"], "{{ messages }}");
  EXPECT_EQ(j["build_info"], "pipellm 1.2.3");
  p.chat_template.reset();
  EXPECT_EQ(llama_props_json(p)["chat_template"], "");

  const json s = llama_slots_json(3, 128, 2);
  ASSERT_EQ(s.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(s[i]["id"], i);
    EXPECT_EQ(s[i]["n_ctx"], 128);
    EXPECT_EQ(s[i]["is_processing"], i < 2);
  }
  EXPECT_EQ(llama_slots_json(0, 128, 0), json::array());
}

TEST(LlamaServerShapes, Health) {
  SchedulerStats st;
  st.queued = 2;
  st.in_flight = 3;
  HealthReply h = health_reply(true, true, "", st);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.body, json::parse(R"({"status":"ok","queued":2,"in_flight":3})"));

  st.ever_up = false;  // loading: llama-server's 503
  h = health_reply(false, false, "the stages are starting", st);
  EXPECT_EQ(h.status, 503);
  EXPECT_EQ(h.body["error"], json::parse(R"({"code":503,"message":"Loading model","type":"unavailable_error"})"));
  EXPECT_EQ(h.body["status"], "unavailable");
  EXPECT_EQ(h.body["reason"], "the stages are starting");

  st.ever_up = true;  // went down after serving: the reason
  h = health_reply(false, false, "rank 1 exited", st);
  EXPECT_EQ(h.status, 503);
  EXPECT_EQ(h.body["error"]["message"], "rank 1 exited");
  EXPECT_EQ(h.body["error"]["type"], "unavailable_error");
  h = health_reply(false, true, "", st);  // draining
  EXPECT_EQ(h.body["reason"], "shutting down");
  EXPECT_EQ(h.body["error"]["message"], "shutting down");
}

TEST(OpenAiModel, ObjectAndNotFound) {
  link::HelloMsg m;
  m.arch = "llama";
  m.n_ctx = 512;
  m.n_vocab = 1024;
  m.n_layer = 2;
  m.n_stages = 1;
  m.max_sequences = 4;
  const json j = model_json(m, "tiny", 1700000000);
  EXPECT_EQ(j, json::parse(R"({"id":"tiny","object":"model","created":1700000000,"owned_by":"pipellm",
      "meta":{"architecture":"llama","context_length":512,"n_vocab":1024,"n_layer":2,"n_stages":1,"max_sequences":4}})"));
  const ApiError e = model_not_found("gpt-4", "tiny");
  EXPECT_EQ(e.status, 404);
  EXPECT_EQ(error_json(e), json::parse(R"J({"error":{"message":"model 'gpt-4' does not exist (this server serves 'tiny')",
      "type":"invalid_request_error","param":"model","code":"model_not_found"}})J"));
}

}  // namespace
}  // namespace pipellm::coord

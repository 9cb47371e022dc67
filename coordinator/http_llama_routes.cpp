#include "coordinator/http_llama_routes.h"

#include <cmath>
#include <limits>

namespace pipellm::coord {

using nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message,
                         const std::string& code = "invalid_parameter") {
  throw HttpError(bad_request(param, message, code));
}

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t integer_of(const json& v, const char* name) {
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    refuse(name, std::string(name) + ": out of range");
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  refuse(name, std::string(name) + ": must be an integer");
}

// Samplers llama-server has and PipeLLM does not: accepted while they are off (a client such as
// llama.cpp's web UI sends them all at their defaults), refused otherwise rather than ignored.
struct AbsentSampler {
  const char* name;
  double off_lo, off_hi;  // values in [off_lo, off_hi] turn it off
  const char* what;
};
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr AbsentSampler kAbsentSamplers[] = {
    {"mirostat", 0, 0, "Mirostat sampling"},
    {"dynatemp_range", -kInf, 0, "dynamic temperature"},
    {"typical_p", 1, kInf, "locally typical sampling"},
    {"xtc_probability", -kInf, 0, "XTC sampling"},
    {"dry_multiplier", -kInf, 0, "the DRY repetition penalty"},
    {"top_n_sigma", -kInf, 0, "top-n-sigma sampling"},
};

// OpenAI fields /completion does not have (llama-server ignores them there): dropped so that the
// shared parser does not act on them.
constexpr const char* kOpenAiOnly[] = {"logprobs", "echo", "suffix", "best_of", "n", "stream_options", "max_completion_tokens"};

double per(double a, double b) { return b > 0 ? a / b : 0.0; }

class LlamaFormat final : public GenerationFormat {
 public:
  LlamaFormat(std::string model, json settings, bool return_tokens, steady::time_point started, const Tokenizer* probs_tok)
      : model_(std::move(model)),
        settings_(std::move(settings)),
        return_tokens_(return_tokens),
        started_(started),
        probs_tok_(probs_tok) {}

  std::string update(const Generation::Update& u, bool streaming) override {
    const auto now = steady::now();
    if (!u.tokens.empty()) {
      if (!first_token_) first_token_ = now;
      last_token_ = now;
    }
    pending_.insert(pending_.end(), u.tokens.begin(), u.tokens.end());
    if (probs_tok_ != nullptr) {
      static const std::vector<TokenLogprob> kNone;
      for (size_t i = 0; i < u.tokens.size(); ++i) {
        probs_.push_back(llama_token_probs_json(*probs_tok_, u.tokens[i],
                                                i < u.logprobs.size() ? u.logprobs[i] : std::nanf(""),
                                                i < u.top_logprobs.size() ? u.top_logprobs[i] : kNone));
      }
    }
    if (!streaming) {
      text_ += u.text;
      return "";
    }
    if (u.text.empty()) return "";  // ids whose text is held back go with the next text
    std::string event = sse_event(llama_chunk_json(u.text, pending_, take_probs()));
    pending_.clear();
    return event;
  }

  json body(const Generation::Update& last, const Generation& g) override {
    LlamaCompletion c = result(last, g, text_, return_tokens_ ? pending_ : std::vector<int32_t>{});
    c.completion_probabilities = take_probs();
    return llama_completion_json(c);
  }

  std::string stream_close(const Generation::Update& last, const Generation& g) override {
    LlamaCompletion c = result(last, g, "", pending_);  // the content went in chunks
    c.completion_probabilities = take_probs();         // of tokens whose text never showed
    return sse_event(llama_completion_json(c));
  }

 private:
  LlamaCompletion result(const Generation::Update& last, const Generation& g, std::string content,
                         std::vector<int32_t> tokens) const {
    LlamaCompletion c;
    c.model = model_;
    c.content = std::move(content);
    c.tokens = std::move(tokens);
    c.stop_type = llama_stop_type(last.finish, last.stop_string);
    c.stopping_word = last.stop_string;
    c.tokens_evaluated = g.prompt_tokens();
    c.tokens_cached = g.cached_tokens();
    c.tokens_predicted = g.generated_tokens();
    const auto ms = [](steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
    const steady::time_point first = first_token_.value_or(steady::now());
    c.timings.cache_n = g.cached_tokens();
    c.timings.prompt_n = g.prompt_tokens() - g.cached_tokens();  // evaluated (llama-server's)
    c.timings.prompt_ms = ms(first - started_);
    c.timings.predicted_n = g.generated_tokens();
    c.timings.predicted_ms = first_token_ ? ms(last_token_ - *first_token_) : 0.0;
    c.generation_settings = settings_;
    return c;
  }

  std::string model_;
  json settings_;
  bool return_tokens_;
  steady::time_point started_;
  std::optional<steady::time_point> first_token_;
  steady::time_point last_token_{};
  // The pending tokens' completion_probabilities (null without n_probs); none are pending after.
  json take_probs() {
    if (probs_tok_ == nullptr) return nullptr;
    json out = std::move(probs_);
    probs_ = json::array();
    return out;
  }

  const Tokenizer* probs_tok_;
  std::string text_;              // collected (not streaming)
  std::vector<int32_t> pending_;  // ids not yet reported (all of them when not streaming)
  json probs_ = json::array();    // completion_probabilities not yet reported
};

}  // namespace

LlamaCompletionRequest parse_llama_completion(const json& body, const std::string* raw) {
  if (!body.is_object()) refuse("", "body: must be a JSON object");
  json b = body;
  LlamaCompletionRequest lr;

  std::optional<int64_t> n_predict;
  if (const json* n = field(body, "n_predict")) {
    n_predict = integer_of(*n, "n_predict");
  } else if (const json* m = field(body, "max_tokens")) {  // llama-server reads it too
    n_predict = integer_of(*m, "max_tokens");
  }
  if (n_predict && *n_predict == 0) {
    refuse("n_predict", "n_predict: 0 (evaluate the prompt only) is not supported; give -1 or at least 1",
           "unsupported_parameter");
  }
  if (n_predict && *n_predict < -1) {
    refuse("n_predict", "n_predict: must be -1 (to the end of the context) or at least 1 (got " +
                            std::to_string(*n_predict) + ")");
  }
  b.erase("n_predict");
  b.erase("max_tokens");

  if (const json* s = field(body, "seed")) {
    // -1, also as the unsigned 32-bit value llama.cpp reports it with, is "a random seed"
    if ((s->is_number_integer() && s->get<int64_t>() == -1) || (s->is_number_unsigned() && s->get<uint64_t>() == 0xFFFFFFFFu)) {
      lr.random_seed = true;
      b.erase("seed");
    }
  }
  if (const json* t = field(body, "temperature"); t && t->is_number() && t->get<double>() < 0) {
    b["temperature"] = 0.0;  // llama.cpp: a negative temperature samples greedily
  }
  for (const AbsentSampler& a : kAbsentSamplers) {
    const json* v = field(body, a.name);
    if (!v) continue;
    if (!v->is_number()) refuse(a.name, std::string(a.name) + ": must be a number");
    const double x = v->get<double>();
    if (!(x >= a.off_lo && x <= a.off_hi)) {
      refuse(a.name, std::string(a.name) + ": " + a.what + " is not supported (leave it out or at its default)",
             "unsupported_parameter");
    }
  }
  // n_probs: the alternatives per token (negative: off, as llama-server treats it), refused past
  // what the link carries rather than cut short.
  if (const json* np = field(body, "n_probs")) {
    const int64_t n = integer_of(*np, "n_probs");
    if (n > kMaxTopLogprobs) {
      refuse("n_probs", "n_probs: must be at most " + std::to_string(kMaxTopLogprobs) + " (got " + std::to_string(n) + ")");
    }
    lr.n_probs = n > 0 ? static_cast<int>(n) : 0;
  }
  b.erase("n_probs");
  // The probabilities after the sampler chain are not computed (the alternatives come from the
  // model's distribution after penalties).
  if (const json* ps = field(body, "post_sampling_probs"); ps && !(ps->is_boolean() && !ps->get<bool>())) {
    refuse("post_sampling_probs", "post_sampling_probs: not supported (leave it out or false)", "unsupported_parameter");
  }
  for (const char* name : kOpenAiOnly) b.erase(name);
  if (const json* rt = field(body, "return_tokens")) {
    if (!rt->is_boolean()) refuse("return_tokens", "return_tokens: must be a boolean");
    lr.return_tokens = rt->get<bool>();
  }

  lr.request = parse_completion_request(b, raw);
  GenerateInput& in = lr.request.input;
  if (n_predict && *n_predict > 0) in.max_tokens = *n_predict;
  in.until_context = n_predict && *n_predict == -1;
  in.parse_special = true;
  if (lr.n_probs > 0) {
    in.logprobs = true;
    in.top_logprobs = lr.n_probs;
  }
  return lr;
}

ApiError as_llama_error(ApiError e) {
  if (e.param != "max_tokens") return e;
  e.param = "n_predict";
  for (size_t at = e.message.find("max_tokens"); at != std::string::npos; at = e.message.find("max_tokens", at)) {
    e.message.replace(at, 10, "n_predict");
  }
  return e;
}

const char* llama_stop_type(link::FinishReason finish, const std::string& stop_string) {
  if (finish == link::FinishReason::Length) return "limit";
  if (finish == link::FinishReason::Stop) return stop_string.empty() ? "eos" : "word";
  return "none";
}

json llama_timings_json(const LlamaTimings& t) {
  return {{"cache_n", t.cache_n},
          {"prompt_n", t.prompt_n},
          {"prompt_ms", t.prompt_ms},
          {"prompt_per_token_ms", per(t.prompt_ms, t.prompt_n)},
          {"prompt_per_second", per(1000.0 * t.prompt_n, t.prompt_ms)},
          {"predicted_n", t.predicted_n},
          {"predicted_ms", t.predicted_ms},
          {"predicted_per_token_ms", per(t.predicted_ms, t.predicted_n)},
          {"predicted_per_second", per(1000.0 * t.predicted_n, t.predicted_ms)}};
}

json llama_params_json(const link::SamplingParams& sp, int n_predict, const std::vector<std::string>& stop,
                       bool ignore_eos, bool stream) {
  return {{"n_predict", n_predict},
          {"max_tokens", n_predict},
          {"seed", sp.seed},
          {"temperature", sp.temperature},
          {"top_k", sp.top_k},
          {"top_p", sp.top_p},
          {"min_p", sp.min_p},
          {"repeat_last_n", sp.penalty_last_n},
          {"repeat_penalty", sp.repeat_penalty},
          {"presence_penalty", sp.presence_penalty},
          {"frequency_penalty", sp.frequency_penalty},
          {"stop", stop},
          {"ignore_eos", ignore_eos},
          {"stream", stream},
          {"n_probs", sp.top_logprobs},
          {"grammar", sp.grammar}};
}

json llama_generation_settings(const GenerateInput& in, const PreparedRequest& prep, int n_ctx, bool stream,
                               const std::string& model) {
  json j = llama_params_json(prep.submit.sampling, prep.submit.max_tokens, prep.stop_strings, in.ignore_eos, stream);
  j["n_ctx"] = n_ctx;
  j["model"] = model;
  return j;
}

json llama_completion_json(const LlamaCompletion& c) {
  json j = {{"index", 0},
          {"content", c.content},
          {"tokens", c.tokens},
          {"id_slot", -1},  // the head picks the KV slot; the coordinator does not see which
          {"stop", true},
          {"model", c.model},
          {"tokens_predicted", c.tokens_predicted},
          {"tokens_evaluated", c.tokens_evaluated},
          {"generation_settings", c.generation_settings},
          {"has_new_line", c.content.find('\n') != std::string::npos},
          {"truncated", false},
          {"stop_type", c.stop_type},
          {"stopping_word", c.stopping_word},
          {"tokens_cached", c.tokens_cached},
          {"timings", llama_timings_json(c.timings)}};
  if (!c.completion_probabilities.is_null()) j["completion_probabilities"] = c.completion_probabilities;
  return j;
}

json llama_chunk_json(const std::string& content, const std::vector<int32_t>& tokens, const json& probabilities) {
  json j = {{"index", 0}, {"content", content}, {"tokens", tokens}, {"stop", false}};
  if (!probabilities.is_null()) j["completion_probabilities"] = probabilities;
  return j;
}

json llama_token_probs_json(const Tokenizer& tok, int32_t id, float logprob, const std::vector<TokenLogprob>& top) {
  json alts = json::array();
  for (const TokenLogprob& a : top) {
    json e = token_logprob_json(tok.render_piece(a.id), a.logprob);
    e["id"] = a.id;
    alts.push_back(std::move(e));
  }
  json j = token_logprob_json(tok.render_piece(id), logprob);
  j["id"] = id;
  j["top_logprobs"] = std::move(alts);
  return j;
}

std::unique_ptr<GenerationFormat> llama_completion_format(std::string model, json settings, bool return_tokens,
                                                          steady::time_point started, const Tokenizer* probs_tok) {
  return std::make_unique<LlamaFormat>(std::move(model), std::move(settings), return_tokens, started, probs_tok);
}

json llama_props_json(const LlamaProps& p) {
  return {{"default_generation_settings",
           {{"id", 0}, {"id_task", -1}, {"n_ctx", p.n_ctx}, {"speculative", false}, {"is_processing", false},
            {"params", p.default_params}}},
          {"total_slots", p.total_slots},
          // The front door knows the model by its served id, not by its file: both carry that id.
          {"model_alias", p.model_id},
          {"model_path", p.model_id},
          {"chat_template", p.chat_template.value_or("")},
          {"modalities", {{"vision", false}, {"audio", false}}},
          {"build_info", p.build_info}};
}

json llama_slots_json(int total_slots, int n_ctx, int processing) {
  json slots = json::array();
  for (int i = 0; i < total_slots; ++i) {
    slots.push_back({{"id", i}, {"id_task", -1}, {"n_ctx", n_ctx}, {"speculative", false}, {"is_processing", i < processing}});
  }
  return slots;
}

HealthReply health_reply(bool serving, bool has_model, const std::string& down_reason, const SchedulerStats& st) {
  if (serving) return {200, {{"status", "ok"}, {"queued", st.queued}, {"in_flight", st.in_flight}}};
  const std::string reason = has_model ? "shutting down" : down_reason;
  const std::string message = st.ever_up ? reason : "Loading model";
  return {503,
          {{"status", "unavailable"},
           {"reason", reason},
           {"error", {{"code", 503}, {"message", message}, {"type", "unavailable_error"}}}}};
}

}  // namespace pipellm::coord

#include "coordinator/http_generation.h"

#include <spdlog/spdlog.h>

#include <optional>

namespace pipellm::coord {

using nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(100);

double seconds_since(steady::time_point t0) { return std::chrono::duration<double>(steady::now() - t0).count(); }

// The ids of the special tokens written as `texts` (texts that are not one token of this
// vocabulary are skipped: the model spells them, and they show anyway).
std::vector<int32_t> special_ids(const Tokenizer& tok, const std::vector<std::string>& texts) {
  std::vector<int32_t> ids;
  for (const std::string& t : texts) {
    const std::vector<int32_t> one = tok.encode(t, false, true);
    if (one.size() == 1 && tok.token_to_piece(one[0]) == t) ids.push_back(one[0]);
  }
  return ids;
}

class OpenAiFormat final : public GenerationFormat {
 public:
  OpenAiFormat(ResponseMeta meta, bool chat, bool usage, const Tokenizer* logprobs_tok, int top_logprobs)
      : meta_(std::move(meta)), chat_(chat), usage_(usage) {
    if (logprobs_tok != nullptr) lp_.emplace(*logprobs_tok, top_logprobs);
  }

  std::string stream_open() override {
    return chat_ ? sse_event(chat_chunk_json(meta_, std::string("assistant"), std::string(), nullptr)) : "";
  }

  std::string update(const Generation::Update& u, bool streaming) override {
    if (lp_) lp_->add_tokens(u.tokens, u.logprobs, u.top_logprobs);
    if (!streaming) {
      text_ += u.text;
      return "";
    }
    if (u.text.empty()) return "";
    if (lp_) lp_->add_text(u.text);
    const json lps = take_logprobs();
    return sse_event(chat_ ? chat_chunk_json(meta_, std::nullopt, u.text, nullptr, lps)
                           : completion_chunk_json(meta_, u.text, nullptr, lps));
  }

  json body(const Generation::Update& last, const Generation& g) override {
    const char* finish = finish_reason_text(last.finish);
    json logprobs = nullptr;
    if (lp_) {
      lp_->add_text(text_);
      logprobs = chat_ ? lp_->take_chat() : lp_->take_completion();
    }
    return chat_ ? chat_json(meta_, text_, finish, g.usage(), logprobs)
                 : completion_json(meta_, text_, finish, g.usage(), logprobs);
  }

  std::string stream_close(const Generation::Update& last, const Generation& g) override {
    const char* finish = finish_reason_text(last.finish);
    const json lps = take_logprobs();  // tokens whose text never showed (a stop string)
    std::string tail = sse_event(chat_ ? chat_chunk_json(meta_, std::nullopt, std::nullopt, finish, lps)
                                       : completion_chunk_json(meta_, "", finish, lps));
    if (usage_) tail += sse_event(usage_chunk_json(meta_, chat_, g.usage()));
    return tail + sse_done();
  }

  std::string stream_error(const ApiError& e) override { return sse_event(error_json(e)) + sse_done(); }

 private:
  // The pending tokens' logprobs for the next chunk (null when not asked or none pending).
  json take_logprobs() {
    if (!lp_ || !lp_->pending()) return nullptr;
    return chat_ ? lp_->take_chat() : lp_->take_completion();
  }

  ResponseMeta meta_;
  bool chat_, usage_;
  std::optional<LogprobTrack> lp_;
  std::string text_;  // collected (not streaming)
};

}  // namespace

std::unique_ptr<GenerationFormat> openai_format(ResponseMeta meta, bool chat, bool usage, const Tokenizer* logprobs_tok,
                                                int top_logprobs) {
  return std::make_unique<OpenAiFormat>(std::move(meta), chat, usage, logprobs_tok, top_logprobs);
}

StartedGeneration start_generation(const FrontDoorContext& ctx, const std::string& principal, const GenerateInput& in) {
  StartedGeneration s;
  const auto refuse = [&s](ApiError e) {
    s.error = std::move(e);
    return std::move(s);
  };
  try {
    const auto model = ctx.sched.model();
    if (!model) return refuse(error_of_failure(Code::Unavailable, "the model stages are not available: " + ctx.sched.down_reason()));
    s.model = *model;
    try {
      s.prep = ctx.text.prepare(in, model->n_ctx, model->n_vocab, ctx.limits);
    } catch (const RequestError& e) {
      return refuse(error_of_prepare(e));
    }
    s.prep.shown_ids = special_ids(ctx.text.tokenizer(), in.shown_tokens);
    std::optional<StreamLimiter::Lease> lease = ctx.streams.try_acquire(principal);
    if (!lease) {
      ApiError e;
      e.status = 429;
      e.type = "rate_limit_error";
      e.code = "too_many_streams";
      e.message = "too many concurrent requests for " + principal + " (limit " + std::to_string(ctx.streams.limit()) + ")";
      spdlog::info("http: refused ({}): {}", e.code, e.message);
      return refuse(e);
    }
    try {
      s.gen = Generation::start(ctx.sched, ctx.text, s.prep, std::move(*lease));
    } catch (const RequestError& e) {
      return refuse(error_of_submit(e));
    }
  } catch (const HttpError& e) {
    return refuse(e.error());
  } catch (const std::exception& e) {  // e.g. a tokenizer failure on odd input
    return refuse(bad_request("prompt", std::string("prompt: ") + e.what()));
  }
  return s;
}

void send_api_error(Metrics& metrics, httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump_json(error_json(e)), "application/json");
  metrics.count_refusal("http", e.code.empty() ? std::to_string(e.status) : e.code);
}

void collect_generation(const FrontDoorContext& ctx, const std::atomic<bool>& stopped, httplib::Response& res,
                        Generation& gen, GenerationFormat& format, steady::time_point t0) {
  for (;;) {
    if (stopped.load()) {
      gen.abandon();
      send_api_error(ctx.metrics, res, error_of_failure(Code::Unavailable, "the server is shutting down"));
      return;
    }
    const Generation::Update u = gen.poll(kPoll);
    format.update(u, false);
    if (!u.ended) continue;
    ctx.metrics.observe_request_duration("http", seconds_since(t0));
    if (u.failed) {
      spdlog::warn("http: request {} failed ({}): {}", gen.id(), code_name(*u.failed), u.message);
      send_api_error(ctx.metrics, res, error_of_failure(*u.failed, u.message));
      return;
    }
    json body;
    try {
      body = format.body(u, gen);
    } catch (const HttpError& e) {  // the output is not what the request required (a tool call)
      send_api_error(ctx.metrics, res, e.error());
      return;
    }
    res.status = 200;
    res.set_content(dump_json(body), "application/json");
    return;
  }
}

void stream_generation(const FrontDoorContext& ctx, const std::atomic<bool>& stopped, httplib::Response& res,
                       std::shared_ptr<Generation> gen, std::unique_ptr<GenerationFormat> format, steady::time_point t0) {
  struct State {
    std::shared_ptr<Generation> gen;
    std::unique_ptr<GenerationFormat> format;
    steady::time_point t0;
    bool started = false, done = false;
  };
  auto st = std::make_shared<State>(State{std::move(gen), std::move(format), t0});
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto provider = [ctx, &stopped, st](size_t, httplib::DataSink& sink) -> bool {
    auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
    if (st->done) {
      sink.done();
      return true;
    }
    if (stopped.load()) {
      st->gen->abandon();
      write(sse_event(error_json(error_of_failure(Code::Unavailable, "the server is shutting down"))));
      st->done = true;
      sink.done();
      return true;
    }
    if (!st->started) {
      st->started = true;
      const std::string first = st->format->stream_open();
      if (!first.empty() && !write(first)) return false;
    }
    const Generation::Update u = st->gen->poll(kPoll);
    const std::string events = st->format->update(u, true);
    if (!events.empty() && !write(events)) {
      spdlog::info("http: request {}: the client went away; cancelling", st->gen->id());
      st->gen->abandon();
      return false;
    }
    if (!u.ended) return true;
    ctx.metrics.observe_request_duration("http", seconds_since(st->t0));
    std::string tail;
    if (u.failed) {
      spdlog::warn("http: request {} failed ({}): {}", st->gen->id(), code_name(*u.failed), u.message);
      const ApiError e = error_of_failure(*u.failed, u.message);
      ctx.metrics.count_refusal("http", e.code);
      tail = st->format->stream_error(e);
    } else {
      tail = st->format->stream_close(u, *st->gen);
    }
    st->done = true;
    if (!write(tail)) return false;
    sink.done();
    return true;
  };
  // Called when the response ends, written or not: an unfinished generation is cancelled.
  auto releaser = [st](bool) { st->gen->abandon(); };
  res.set_chunked_content_provider("text/event-stream", std::move(provider), std::move(releaser));
}

}  // namespace pipellm::coord

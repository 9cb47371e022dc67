#include "coordinator/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include "coordinator/generation.h"
#include "coordinator/http_gate.h"
#include "coordinator/http_openai.h"
#include "coordinator/http_origin.h"
#include "coordinator/http_tls.h"

namespace pipellm::coord {

using nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(100);

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

// The routes and their methods: metrics labels and 405's Allow header.
struct RouteMethods {
  const char* path;
  const char* allow;
};
constexpr RouteMethods kRoutes[] = {{"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
                                    {"/v1/models", "GET"},       {"/health", "GET"},
                                    {"/tokenize", "POST"},       {"/detokenize", "POST"},
                                    {"/metrics", "GET"}};

// Route label for metrics: the fixed routes by name, anything else "other" (bounded cardinality).
std::string route_label(const std::string& path) {
  for (const RouteMethods& r : kRoutes) {
    if (path == r.path) return r.path;
  }
  return "other";
}

const char* allowed_methods(const std::string& path) {
  for (const RouteMethods& r : kRoutes) {
    if (path == r.path) return r.allow;
  }
  return nullptr;
}

}  // namespace

struct HttpFrontDoor::Impl {
  FrontDoorContext ctx;
  HttpOptions opt;
  std::unique_ptr<TlsContext> tls;  // HTTPS; outlives the gate (declared first)
  std::unique_ptr<httplib::Server> server;
  std::unique_ptr<HttpGate> gate;  // our own connection handling, plain or TLS
  int port = 0;
  std::atomic<bool> stopped{false};

  OriginPolicy origin_policy;

  Impl(FrontDoorContext c, HttpOptions o) : ctx(c), opt(std::move(o)) {
    origin_policy.listen_host = split_host_port(opt.listen).first;
    origin_policy.cors_origins = opt.cors_origins;
  }

  void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(dump_json(error_json(e)), "application/json");
    ctx.metrics.count_refusal("http", e.code.empty() ? std::to_string(e.status) : e.code);
  }

  void send_json(httplib::Response& res, const json& j, int status = 200) {
    res.status = status;
    res.set_content(dump_json(j), "application/json");
  }

  std::string model_id(const link::HelloMsg& m) const {
    if (!opt.model_alias.empty()) return opt.model_alias;
    return m.model_name.empty() ? "pipellm" : m.model_name;
  }

  // Host, Origin and Content-Type (http_origin.h), CORS for --cors-origin, then the API key;
  // all before the body is read.
  httplib::Server::HandlerResponse admit(const httplib::Request& req, httplib::Response& res) {
    const std::string origin = req.get_header_value("Origin");
    if (auto no = check_origin(origin_policy, req.method, req.get_header_value("Host"), origin,
                               req.get_header_value("Content-Type"), req.local_port)) {
      spdlog::warn("http: {} {} from {}: refused ({}): {}", req.method, route_label(req.path), req.remote_addr, no->code,
                   no->message);
      ApiError e;
      e.status = no->status;
      e.code = no->code;
      e.message = no->message;
      send_error(res, e);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (cors_allowed(origin_policy, origin)) {
      res.set_header("Access-Control-Allow-Origin", origin);
      res.set_header("Vary", "Origin");
      if (req.method == "OPTIONS") {  // the preflight of a cross-origin JSON POST
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
        res.set_header("Access-Control-Max-Age", "600");
        res.status = 204;
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return authorize(req, res);
  }

  // Every route but /health needs a key when keys are configured; checked before the body is read.
  httplib::Server::HandlerResponse authorize(const httplib::Request& req, httplib::Response& res) {
    if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const AuthResult a = check_bearer(ctx.keys, req.get_header_value("Authorization"));
    if (a.ok()) return httplib::Server::HandlerResponse::Unhandled;
    spdlog::warn("http: {} {} from {}: refused ({})", req.method, route_label(req.path), req.remote_addr, a.code());
    ApiError e;
    e.status = 401;
    e.type = "authentication_error";
    e.code = a.code();
    e.message = a.message();
    send_error(res, e);
    res.set_header("WWW-Authenticate", "Bearer");
    return httplib::Server::HandlerResponse::Handled;
  }

  void generate(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(httplib::Response& res, std::shared_ptr<Generation> gen, ResponseMeta meta, bool chat, bool usage);
  void collect(httplib::Response& res, Generation& gen, const ResponseMeta& meta, bool chat, steady::time_point t0);
  void tokenize(const httplib::Request& req, httplib::Response& res);
  void detokenize(const httplib::Request& req, httplib::Response& res);
  void models(httplib::Response& res);
  void health(httplib::Response& res);
  std::string gate_metrics() const;
  void routes();
};

void HttpFrontDoor::Impl::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const auto t0 = steady::now();
  const std::string principal = check_bearer(ctx.keys, req.get_header_value("Authorization")).principal;
  OpenAiRequest r;
  PreparedRequest prep;
  std::shared_ptr<Generation> gen;  // the one generation path, shared with the gRPC door
  std::optional<StreamLimiter::Lease> lease;
  std::optional<link::HelloMsg> model;
  try {
    r = chat ? parse_chat_request(parse_body(req.body), &req.body)
             : parse_completion_request(parse_body(req.body), &req.body);
    model = ctx.sched.model();
    if (!model) {
      send_error(res, error_of_failure(Code::Unavailable, "the model stages are not available: " + ctx.sched.down_reason()));
      return;
    }
    try {
      prep = ctx.text.prepare(r.input, model->n_ctx, model->n_vocab, ctx.limits);
    } catch (const RequestError& e) {
      send_error(res, error_of_prepare(e));
      return;
    }
    lease = ctx.streams.try_acquire(principal);
    if (!lease) {
      ApiError e;
      e.status = 429;
      e.type = "rate_limit_error";
      e.code = "too_many_streams";
      e.message = "too many concurrent requests for " + principal + " (limit " + std::to_string(ctx.streams.limit()) + ")";
      spdlog::info("http: refused ({}): {}", e.code, e.message);
      send_error(res, e);
      return;
    }
    try {
      gen = Generation::start(ctx.sched, ctx.text, prep, std::move(*lease));
    } catch (const RequestError& e) {
      send_error(res, error_of_submit(e));
      return;
    }
  } catch (const HttpError& e) {
    send_error(res, e.error());
    return;
  } catch (const std::exception& e) {  // e.g. a tokenizer failure on odd input
    send_error(res, bad_request("prompt", std::string("prompt: ") + e.what()));
    return;
  }

  ResponseMeta meta{(chat ? "chatcmpl-" : "cmpl-") + std::to_string(gen->id()), unix_now(), model_id(*model)};
  spdlog::debug("http: {} request {} ({} prompt tokens, max_tokens {}, stream {})", chat ? "chat" : "completion",
                gen->id(), gen->prompt_tokens(), prep.submit.max_tokens, r.stream);
  if (r.stream) {
    stream(res, std::move(gen), meta, chat, r.include_usage);
  } else {
    collect(res, *gen, meta, chat, t0);
  }
}

void HttpFrontDoor::Impl::collect(httplib::Response& res, Generation& gen, const ResponseMeta& meta, bool chat,
                                  steady::time_point t0) {
  std::string text;
  std::optional<LogprobTrack> lp;  // when the request asked for logprobs
  if (gen.logprobs()) lp.emplace(ctx.text.tokenizer());
  for (;;) {
    if (stopped.load()) {
      gen.abandon();
      send_error(res, error_of_failure(Code::Unavailable, "the server is shutting down"));
      return;
    }
    Generation::Update u = gen.poll(kPoll);
    text += u.text;
    if (lp) lp->add_tokens(u.tokens, u.logprobs);
    if (!u.ended) continue;
    ctx.metrics.observe_request_duration("http", std::chrono::duration<double>(steady::now() - t0).count());
    if (u.failed) {
      spdlog::warn("http: request {} failed ({}): {}", gen.id(), code_name(*u.failed), u.message);
      send_error(res, error_of_failure(*u.failed, u.message));
      return;
    }
    const char* finish = finish_reason_text(u.finish);
    json logprobs = nullptr;
    if (lp) {
      lp->add_text(text);
      logprobs = chat ? lp->take_chat() : lp->take_completion();
    }
    send_json(res, chat ? chat_json(meta, text, finish, gen.prompt_tokens(), gen.generated_tokens(), logprobs)
                        : completion_json(meta, text, finish, gen.prompt_tokens(), gen.generated_tokens(), logprobs));
    return;
  }
}

void HttpFrontDoor::Impl::stream(httplib::Response& res, std::shared_ptr<Generation> gen, ResponseMeta meta, bool chat,
                                 bool usage) {
  struct State {
    std::shared_ptr<Generation> gen;
    ResponseMeta meta;
    bool chat, usage;
    bool started = false, done = false;
    steady::time_point t0 = steady::now();
    std::optional<LogprobTrack> lp{};  // when the request asked for logprobs
    // The pending tokens' logprobs for the next chunk (null when not asked or none pending).
    json take_logprobs() {
      if (!lp || !lp->pending()) return nullptr;
      return chat ? lp->take_chat() : lp->take_completion();
    }
  };
  auto st = std::make_shared<State>(State{std::move(gen), std::move(meta), chat, usage});
  if (st->gen->logprobs()) st->lp.emplace(ctx.text.tokenizer());
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto provider = [this, st](size_t, httplib::DataSink& sink) -> bool {
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
      const std::string first = st->chat ? sse_event(chat_chunk_json(st->meta, std::string("assistant"), std::string(), nullptr))
                                         : std::string();
      if (!first.empty() && !write(first)) return false;
    }
    Generation::Update u = st->gen->poll(kPoll);
    if (st->lp) st->lp->add_tokens(u.tokens, u.logprobs);
    if (!u.text.empty()) {
      if (st->lp) st->lp->add_text(u.text);
      const json lps = st->take_logprobs();
      const json chunk = st->chat ? chat_chunk_json(st->meta, std::nullopt, u.text, nullptr, lps)
                                  : completion_chunk_json(st->meta, u.text, nullptr, lps);
      if (!write(sse_event(chunk))) {
        spdlog::info("http: request {}: the client went away; cancelling", st->gen->id());
        st->gen->abandon();
        return false;
      }
    }
    if (!u.ended) return true;
    ctx.metrics.observe_request_duration("http", std::chrono::duration<double>(steady::now() - st->t0).count());
    std::string tail;
    if (u.failed) {
      spdlog::warn("http: request {} failed ({}): {}", st->gen->id(), code_name(*u.failed), u.message);
      const ApiError e = error_of_failure(*u.failed, u.message);
      ctx.metrics.count_refusal("http", e.code);
      tail = sse_event(error_json(e));
    } else {
      const char* finish = finish_reason_text(u.finish);
      const json lps = st->take_logprobs();  // tokens whose text never showed (a stop string)
      tail = sse_event(st->chat ? chat_chunk_json(st->meta, std::nullopt, std::nullopt, finish, lps)
                                : completion_chunk_json(st->meta, "", finish, lps));
      if (st->usage) {
        tail += sse_event(usage_chunk_json(st->meta, st->chat, st->gen->prompt_tokens(), st->gen->generated_tokens()));
      }
    }
    tail += sse_done();
    st->done = true;
    if (!write(tail)) return false;
    sink.done();
    return true;
  };
  // Called when the response ends, written or not: an unfinished generation is cancelled.
  auto releaser = [st](bool) { st->gen->abandon(); };
  res.set_chunked_content_provider("text/event-stream", std::move(provider), std::move(releaser));
}

void HttpFrontDoor::Impl::tokenize(const httplib::Request& req, httplib::Response& res) {
  try {
    const json body = parse_body(req.body);
    GenerateInput in;
    const auto content = body.find("content");
    const auto messages = body.find("messages");
    if (content != body.end() && content->is_string()) {
      in.kind = GenerateInput::PromptKind::Text;
      in.text = content->get<std::string>();
      if (in.text.size() > ctx.limits.max_prompt_bytes) {
        ApiError e = bad_request("content", "content: " + std::to_string(in.text.size()) +
                                                " bytes, more than the limit of " +
                                                std::to_string(ctx.limits.max_prompt_bytes),
                                 "prompt_too_large");
        e.status = 413;
        send_error(res, e);
        return;
      }
    } else if (messages != body.end()) {
      json chat_body = {{"messages", *messages}};
      in = parse_chat_request(chat_body).input;
    } else {
      send_error(res, bad_request("content", "content: missing (give \"content\": string or \"messages\")"));
      return;
    }
    if (const auto s = body.find("add_special"); s != body.end()) {
      if (!s->is_boolean()) {
        send_error(res, bad_request("add_special", "add_special: must be a boolean"));
        return;
      }
      in.add_special = s->get<bool>();
    }
    const auto wp = body.find("with_pieces");
    const bool with_pieces = wp != body.end() && wp->is_boolean() && wp->get<bool>();
    json tokens = json::array();
    for (int32_t id : ctx.text.tokenize(in)) {
      if (with_pieces) {
        tokens.push_back({{"id", id}, {"piece", ctx.text.tokenizer().token_to_piece(id)}});
      } else {
        tokens.push_back(id);
      }
    }
    send_json(res, {{"tokens", tokens}});
  } catch (const HttpError& e) {
    send_error(res, e.error());
  } catch (const RequestError& e) {
    send_error(res, error_of_prepare(e));
  } catch (const std::exception& e) {
    send_error(res, bad_request("content", std::string("content: ") + e.what()));
  }
}

void HttpFrontDoor::Impl::detokenize(const httplib::Request& req, httplib::Response& res) {
  try {
    const json body = parse_body(req.body);
    const auto t = body.find("tokens");
    if (t == body.end() || !t->is_array()) {
      send_error(res, bad_request("tokens", "tokens: missing (an array of token ids)"));
      return;
    }
    const int32_t n_vocab = ctx.text.tokenizer().n_vocab();
    std::vector<int32_t> ids;
    for (size_t i = 0; i < t->size(); ++i) {
      const json& v = (*t)[i];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= n_vocab) {
        send_error(res, bad_request("tokens", "tokens[" + std::to_string(i) + "]: not a token id (the vocabulary has ids 0.." +
                                                  std::to_string(n_vocab - 1) + ")"));
        return;
      }
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    send_json(res, {{"content", ctx.text.tokenizer().decode(ids)}});
  } catch (const HttpError& e) {
    send_error(res, e.error());
  }
}

void HttpFrontDoor::Impl::models(httplib::Response& res) {
  const auto m = ctx.sched.model();
  if (!m) {
    send_error(res, error_of_failure(Code::Unavailable, "the model stages are not available: " + ctx.sched.down_reason()));
    return;
  }
  json model = {{"id", model_id(*m)},
                {"object", "model"},
                {"created", unix_now()},
                {"owned_by", "pipellm"},
                {"meta",
                 {{"architecture", m->arch},
                  {"context_length", m->n_ctx},
                  {"n_vocab", m->n_vocab},
                  {"n_layer", m->n_layer},
                  {"n_stages", m->n_stages},
                  {"max_sequences", m->max_sequences}}}};
  send_json(res, {{"object", "list"}, {"data", json::array({model})}});
}

void HttpFrontDoor::Impl::health(httplib::Response& res) {
  const auto st = ctx.sched.stats();
  if (ctx.sched.serving()) {
    send_json(res, {{"status", "ok"}, {"queued", st.queued}, {"in_flight", st.in_flight}});
  } else {
    const std::string reason = ctx.sched.model() ? "shutting down" : ctx.sched.down_reason();
    send_json(res, {{"status", "unavailable"}, {"reason", reason}}, 503);
  }
}

// The gate's workers and admission, appended to /metrics (plain HTTP only).
std::string HttpFrontDoor::Impl::gate_metrics() const {
  if (!gate) return "";
  const HttpGateStats g = gate->stats();
  std::string out;
  const auto gauge = [&out](const char* name, const char* help, const std::string& v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " + v + "\n";
  };
  gauge("pipellm_http_workers", "HTTP workers for requests other than health, metrics and models", std::to_string(g.workers));
  gauge("pipellm_http_workers_busy", "HTTP workers in a request now", std::to_string(g.busy));
  gauge("pipellm_http_waiting_requests", "HTTP requests waiting for a free worker", std::to_string(g.waiting));
  gauge("pipellm_http_connections", "Open HTTP connections", std::to_string(g.connections));
  out += "# HELP pipellm_http_busy_refusals_total HTTP requests answered 429 for want of a worker\n"
         "# TYPE pipellm_http_busy_refusals_total counter\npipellm_http_busy_refusals_total " +
         std::to_string(g.busy_refusals) + "\n";
  return out;
}

void HttpFrontDoor::Impl::routes() {
  httplib::Server& s = *server;
  s.set_payload_max_length(opt.max_body_bytes);
  s.new_task_queue = [n = static_cast<size_t>(std::max(2, opt.threads))] { return new httplib::ThreadPool(n); };
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) { return admit(req, res); });
  // Statuses set by the HTTP layer itself (404, 413 ...) get an OpenAI-shaped body too; a known
  // route asked with the wrong method is 405 with Allow (cpp-httplib says 404).
  s.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 404) {
      if (const char* allow = allowed_methods(req.path)) {
        res.status = 405;
        res.set_header("Allow", allow);
        ApiError e = error_of_status(405);
        e.message = "method " + req.method + " not allowed on " + req.path + " (allowed: " + allow + ")";
        send_error(res, e);
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    send_error(res, error_of_status(res.status));
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("http: {} {}: {}", req.method, route_label(req.path), what);
    ApiError e = error_of_status(500);
    e.message = "internal error: " + what;
    send_error(res, e);
  });
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    ctx.metrics.count_request("http", route_label(req.path), std::to_string(res.status));
    spdlog::debug("http: {} {} -> {}", req.method, req.path, res.status);
  });

  s.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) { generate(q, r, false); });
  s.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& r) { generate(q, r, true); });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& r) { models(r); });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& r) { health(r); });
  s.Post("/tokenize", [this](const httplib::Request& q, httplib::Response& r) { tokenize(q, r); });
  s.Post("/detokenize", [this](const httplib::Request& q, httplib::Response& r) { detokenize(q, r); });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& r) {
    r.set_content(ctx.metrics.render(ctx.sched.stats(), ctx.sched.serving()) + gate_metrics(), "text/plain; version=0.0.4");
  });
}

HttpFrontDoor::HttpFrontDoor(FrontDoorContext ctx, HttpOptions opt) : impl_(std::make_unique<Impl>(ctx, std::move(opt))) {
  Impl& m = *impl_;
  const auto [host, port] = split_host_port(m.opt.listen);
  if (!m.opt.tls_cert.empty() || !m.opt.tls_key.empty()) {
    if (m.opt.tls_cert.empty() || m.opt.tls_key.empty()) throw Error("http: TLS needs both a certificate and a key");
    m.tls = std::make_unique<TlsContext>(m.opt.tls_cert, m.opt.tls_key);
  }
  m.server = std::make_unique<httplib::Server>();
  m.routes();
  HttpGateLimits l;
  static_cast<HttpLimits&>(l) = m.opt.limits;
  l.workers = std::max(2, m.opt.threads);
  m.gate = std::make_unique<HttpGate>(*m.server, host, port, l, m.tls.get(), [&m](int status, const std::string& path) {
    m.ctx.metrics.count_request("http", route_label(path), std::to_string(status));
    if (status == 429) m.ctx.metrics.count_refusal("http", "server_busy");
  });
  m.port = m.gate->port();
}

HttpFrontDoor::~HttpFrontDoor() { stop(); }

int HttpFrontDoor::port() const { return impl_->port; }
bool HttpFrontDoor::tls() const { return impl_->tls != nullptr; }

void HttpFrontDoor::stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->gate->stop();
}

}  // namespace pipellm::coord

#include "coordinator/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <random>

#include "base/version.h"
#include "coordinator/generation.h"
#include "coordinator/http_embeddings.h"
#include "coordinator/http_gate.h"
#include "coordinator/http_generation.h"
#include "coordinator/http_infill.h"
#include "coordinator/http_llama_routes.h"
#include "coordinator/http_openai.h"
#include "coordinator/http_origin.h"
#include "coordinator/http_tls.h"
#include "coordinator/http_tool_calls.h"

namespace pipellm::coord {

using nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

// The routes and their methods: metrics labels and 405's Allow header. A `prefix` route takes an
// id after its path ("/v1/models/{id}") and is labelled by that pattern.
struct RouteMethods {
  const char* path;
  const char* allow;
  bool prefix = false;
};
constexpr RouteMethods kRoutes[] = {
    {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"}, {"/v1/models", "GET"}, {"/v1/models/", "GET", true},
    {"/health", "GET"},          {"/tokenize", "POST"},            {"/detokenize", "POST"}, {"/metrics", "GET"},
    // llama-server's own routes (http_llama_routes.h)
    {"/completion", "POST"},     {"/apply-template", "POST"},      {"/props", "GET"},       {"/slots", "GET"},
    {"/infill", "POST"},
    {"/v1/embeddings", "POST"},  {"/embedding", "POST"},           {"/embeddings", "POST"}};  // http_embeddings.h

const RouteMethods* route_of(const std::string& path) {
  for (const RouteMethods& r : kRoutes) {
    const size_t n = std::strlen(r.path);
    if (r.prefix ? path.size() > n && path.compare(0, n, r.path) == 0 : path == r.path) return &r;
  }
  return nullptr;
}

// Route label for metrics: the fixed routes by name, anything else "other" (bounded cardinality).
std::string route_label(const std::string& path) {
  const RouteMethods* r = route_of(path);
  if (r == nullptr) return "other";
  return r->prefix ? std::string(r->path) + "{id}" : std::string(r->path);
}

const char* allowed_methods(const std::string& path) {
  const RouteMethods* r = route_of(path);
  return r == nullptr ? nullptr : r->allow;
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

  void send_error(httplib::Response& res, const ApiError& e) { send_api_error(ctx.metrics, res, e); }

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
  // A refusal made before the body was read: the gate closes the connection (the body is
  // unread), and the response says so, so a client does not send its next request on it.
  static void refused_before_body(const httplib::Request& req, httplib::Response& res) {
    if (req.has_header("Content-Length") || req.has_header("Transfer-Encoding")) res.set_header("Connection", "close");
  }

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
      refused_before_body(req, res);
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
    refused_before_body(req, res);
    return httplib::Server::HandlerResponse::Handled;
  }

  // The model while it is up; else sends 503 and returns nullopt.
  std::optional<link::HelloMsg> model_or_503(httplib::Response& res) {
    auto m = ctx.sched.model();
    if (!m) send_error(res, error_of_failure(Code::Unavailable, "the model stages are not available: " + ctx.sched.down_reason()));
    return m;
  }
  std::string principal(const httplib::Request& req) const {
    return check_bearer(ctx.keys, req.get_header_value("Authorization")).principal;
  }

  void generate(const httplib::Request& req, httplib::Response& res, bool chat);
  // /completion, or /infill (`infill`: the prompt laid out from input_prefix/suffix/extra).
  void llama_completion(const httplib::Request& req, httplib::Response& res, bool infill);
  void apply_template(const httplib::Request& req, httplib::Response& res);
  void tokenize(const httplib::Request& req, httplib::Response& res);
  void detokenize(const httplib::Request& req, httplib::Response& res);
  void embeddings(const httplib::Request& req, httplib::Response& res, bool oai);
  void models(httplib::Response& res);
  void model(const std::string& id, httplib::Response& res);
  void props(httplib::Response& res);
  void slots(httplib::Response& res);
  void health(httplib::Response& res);
  std::string gate_metrics() const;
  void routes();
};

void HttpFrontDoor::Impl::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const auto t0 = steady::now();
  OpenAiRequest r;
  try {
    r = chat ? parse_chat_request(parse_body(req.body), &req.body) : parse_completion_request(parse_body(req.body), &req.body);
  } catch (const HttpError& e) {
    send_error(res, e.error());
    return;
  }
  std::optional<ToolCallPlan> tools;
  if (r.tools) {
    try {
      tools = plan_tool_calls(*r.tools, ctx.text.chat_template(), r.input);
    } catch (const HttpError& e) {
      send_error(res, e.error());
      return;
    }
  }
  StartedGeneration s = start_generation(ctx, principal(req), r.input);  // the one path, shared with gRPC
  if (!s.gen) {
    send_error(res, s.error);
    return;
  }
  ResponseMeta meta{(chat ? "chatcmpl-" : "cmpl-") + std::to_string(s.gen->id()), unix_now(), model_id(s.model)};
  spdlog::debug("http: {} request {} ({} prompt tokens, max_tokens {}, stream {}, tool calls {})", chat ? "chat" : "completion",
                s.gen->id(), s.gen->prompt_tokens(), s.prep.submit.max_tokens, r.stream,
                tools ? tool_call_syntax_name(tools->syntax) : "off");
  const Tokenizer* lp_tok = s.gen->logprobs() ? &ctx.text.tokenizer() : nullptr;
  const int top = s.gen->top_logprobs();
  auto format = tools ? tool_call_format(meta, r.include_usage, lp_tok, *tools, top)
                      : openai_format(meta, chat, r.include_usage, lp_tok, top);
  if (r.stream) {
    stream_generation(ctx, stopped, res, std::move(s.gen), std::move(format), t0);
  } else {
    collect_generation(ctx, stopped, res, *s.gen, *format, t0);
  }
}

// llama-server's POST /completion: its body read into the same request type, run through the
// same generation path, answered in its own shape.
void HttpFrontDoor::Impl::llama_completion(const httplib::Request& req, httplib::Response& res, bool infill) {
  const auto t0 = steady::now();
  LlamaCompletionRequest lr;
  try {
    json body = parse_body(req.body);
    if (infill) {
      const json* n = body.contains("n_predict") ? &body["n_predict"] : body.contains("max_tokens") ? &body["max_tokens"] : nullptr;
      // Clamped here only for the layout's arithmetic; parse_llama_completion refuses bad values.
      const int n_predict = n != nullptr && n->is_number_integer()
                                ? static_cast<int>(std::clamp<int64_t>(n->get<int64_t>(), -1, int64_t{1} << 24))
                                : -1;
      const auto model = ctx.sched.model();
      body["prompt"] = infill_prompt(ctx.text.tokenizer(), body, n_predict, model ? model->n_ctx : 0, opt.spm_infill);
      for (const char* f : {"input_prefix", "input_suffix", "input_extra"}) body.erase(f);
    }
    lr = parse_llama_completion(body, infill ? nullptr : &req.body);
  } catch (const HttpError& e) {
    send_error(res, e.error());
    return;
  }
  GenerateInput& in = lr.request.input;
  if (lr.random_seed) in.seed = std::random_device{}();  // 32 bits, as llama.cpp's seeds (exact in JSON clients)
  StartedGeneration s = start_generation(ctx, principal(req), in);
  if (!s.gen) {
    send_error(res, as_llama_error(s.error));
    return;
  }
  const std::string id = model_id(s.model);
  spdlog::debug("http: /completion request {} ({} prompt tokens, n_predict {}, stream {})", s.gen->id(),
                s.gen->prompt_tokens(), s.prep.submit.max_tokens, lr.request.stream);
  // n_probs > 0: completion_probabilities, with the tokens' texts.
  const Tokenizer* probs_tok = s.gen->top_logprobs() > 0 ? &ctx.text.tokenizer() : nullptr;
  auto format = llama_completion_format(id, llama_generation_settings(in, s.prep, s.model.n_ctx, lr.request.stream, id),
                                        lr.return_tokens, t0, probs_tok);
  if (lr.request.stream) {
    stream_generation(ctx, stopped, res, std::move(s.gen), std::move(format), t0);
  } else {
    collect_generation(ctx, stopped, res, *s.gen, *format, t0);
  }
}

// POST /apply-template: the prompt /v1/chat/completions would run for these messages.
void HttpFrontDoor::Impl::apply_template(const httplib::Request& req, httplib::Response& res) {
  try {
    const OpenAiRequest r = parse_chat_request(parse_body(req.body), &req.body);
    send_json(res, {{"prompt", ctx.text.prompt_text(r.input)}});
  } catch (const HttpError& e) {
    send_error(res, e.error());
  } catch (const RequestError& e) {
    send_error(res, error_of_prepare(e));
  }
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

// /v1/embeddings (oai) and llama-server's /embedding, /embeddings: http_embeddings.h.
void HttpFrontDoor::Impl::embeddings(const httplib::Request& req, httplib::Response& res, bool oai) {
  try {
    const json body = parse_body(req.body);
    const std::string model = model_id(ctx.sched.model().value_or(link::HelloMsg{}));
    send_json(res, run_embeddings(ctx.embedder, ctx.text.tokenizer(), body, model, oai, ctx.limits.max_prompt_bytes));
  } catch (const HttpError& e) {
    send_error(res, e.error());
  }
}

void HttpFrontDoor::Impl::models(httplib::Response& res) {
  const auto m = model_or_503(res);
  if (!m) return;
  send_json(res, {{"object", "list"}, {"data", json::array({model_json(*m, model_id(*m), unix_now())})}});
}

void HttpFrontDoor::Impl::model(const std::string& id, httplib::Response& res) {
  const auto m = model_or_503(res);
  if (!m) return;
  if (id != model_id(*m)) {
    send_error(res, model_not_found(id, model_id(*m)));
    return;
  }
  send_json(res, model_json(*m, id, unix_now()));
}

void HttpFrontDoor::Impl::props(httplib::Response& res) {
  const auto m = model_or_503(res);
  if (!m) return;
  // The server's defaults as prepare() applies them (one source of truth): a one-token request.
  GenerateInput probe;
  probe.kind = GenerateInput::PromptKind::Tokens;
  probe.tokens = {0};
  const PreparedRequest d = ctx.text.prepare(probe, m->n_ctx, m->n_vocab, ctx.limits);
  const int n_predict = ctx.limits.default_max_tokens > 0 ? ctx.limits.default_max_tokens : -1;
  LlamaProps p;
  p.model_id = model_id(*m);
  p.n_ctx = m->n_ctx;
  p.total_slots = ctx.sched.stats().capacity;
  p.default_params = llama_params_json(d.submit.sampling, n_predict, {}, false, false);
  p.chat_template = ctx.text.tokenizer().chat_template();
  p.build_info = std::string("pipellm ") + pipellm_version();
  send_json(res, llama_props_json(p));
}

void HttpFrontDoor::Impl::slots(httplib::Response& res) {
  const auto m = model_or_503(res);
  if (!m) return;
  const SchedulerStats st = ctx.sched.stats();
  send_json(res, llama_slots_json(st.capacity, m->n_ctx, st.in_flight));
}

void HttpFrontDoor::Impl::health(httplib::Response& res) {
  const HealthReply h = health_reply(ctx.sched.serving(), ctx.sched.model().has_value(), ctx.sched.down_reason(),
                                     ctx.sched.stats());
  send_json(res, h.body, h.status);
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
  s.Get(R"(/v1/models/(.+))", [this](const httplib::Request& q, httplib::Response& r) { model(q.matches[1], r); });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& r) { health(r); });
  s.Post("/completion", [this](const httplib::Request& q, httplib::Response& r) { llama_completion(q, r, false); });
  s.Post("/infill", [this](const httplib::Request& q, httplib::Response& r) { llama_completion(q, r, true); });
  s.Post("/apply-template", [this](const httplib::Request& q, httplib::Response& r) { apply_template(q, r); });
  s.Get("/props", [this](const httplib::Request&, httplib::Response& r) { props(r); });
  s.Get("/slots", [this](const httplib::Request&, httplib::Response& r) { slots(r); });
  s.Post("/tokenize", [this](const httplib::Request& q, httplib::Response& r) { tokenize(q, r); });
  s.Post("/detokenize", [this](const httplib::Request& q, httplib::Response& r) { detokenize(q, r); });
  s.Post("/v1/embeddings", [this](const httplib::Request& q, httplib::Response& r) { embeddings(q, r, true); });
  s.Post("/embedding", [this](const httplib::Request& q, httplib::Response& r) { embeddings(q, r, false); });
  s.Post("/embeddings", [this](const httplib::Request& q, httplib::Response& r) { embeddings(q, r, false); });
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

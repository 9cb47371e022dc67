// pipellm-client: calls a pipellm-coordinator. generate streams text to stdout (or one JSON
// line per message with --json); tokenize, detokenize, info and health print their answers.
// Exit status: 0 on success, 2 for a gRPC error (printed as "error: CODE: message").
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "base/version.h"
#include "coordinator/client_channel.h"
#include "flags/llama_flags.h"
#include "proto/health.grpc.pb.h"
#include "proto/pipellm.grpc.pb.h"

namespace v1 = pipellm::v1;
namespace flags = pipellm::flags;
using pipellm::InvalidArgument;

namespace {

const char* code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

// Exit statuses: 2 for an error the server returned, kUsageError (sysexits' EX_USAGE) for a bad
// command line, so scripts can tell them apart.
constexpr int kUsageError = 64;

int fail(const grpc::Status& s) {
  std::cerr << "error: " << code_name(s.error_code()) << ": " << s.error_message() << "\n";
  return 2;
}

// "1,2,3" -> ids. Every item must be a whole number in [0, 2^31): nothing is skipped, wrapped
// (4294967297 is not 1) or cut short ("12abc"); throws CLI::ValidationError naming the item.
std::vector<int32_t> parse_ids(const std::string& s, const std::string& what) {
  std::vector<int32_t> ids;
  std::stringstream in(s);
  std::string item;
  size_t n = 0;
  while (std::getline(in, item, ',')) {
    ++n;
    const size_t a = item.find_first_not_of(" \t");
    const std::string t = a == std::string::npos ? "" : item.substr(a, item.find_last_not_of(" \t") - a + 1);
    const bool digits = !t.empty() && t.size() <= 10 && t.find_first_not_of("0123456789") == std::string::npos;
    const long long v = digits ? std::stoll(t) : -1;
    if (v < 0 || v > std::numeric_limits<int32_t>::max()) {
      throw CLI::ValidationError(what, "item " + std::to_string(n) + " ('" + item + "') is not a token id (0.." +
                                           std::to_string(std::numeric_limits<int32_t>::max()) + ")");
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw CLI::ValidationError(what, "no token ids");
  return ids;
}

const char* finish_name(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    case v1::FINISH_REASON_ERROR: return "error";
    default: return "unspecified";
  }
}

// The sampling flags are llama.cpp's (flags/llama_flags.h), as in pipellm generate; values are
// sent only when given, and then always (the server judges their range and names the parameter).
struct GenArgs {
  std::string tokens;
  flags::ChatFlags chat_flags;     // -p, -f, -sys
  std::vector<std::string> chat;   // role:content
  flags::SamplingFlags sampling;
  std::vector<std::string> stop;
  int timeout_ms = 0;
  bool json = false;
};

// Throws InvalidArgument for what the gRPC API cannot carry.
v1::GenerateRequest generate_request(const GenArgs& a) {
  v1::GenerateRequest req;
  const std::string& system = a.chat_flags.system_prompt;
  if (!a.tokens.empty()) {
    for (int32_t id : parse_ids(a.tokens, "--tokens")) req.mutable_tokens()->add_ids(id);
  } else if (!a.chat.empty() || !system.empty()) {
    auto* chat = req.mutable_chat();
    if (!system.empty()) {
      auto* m = chat->add_messages();
      m->set_role("system");
      m->set_content(system);
    }
    for (const auto& rc : a.chat) {
      const auto colon = rc.find(':');
      auto* m = chat->add_messages();
      m->set_role(colon == std::string::npos ? "user" : rc.substr(0, colon));
      m->set_content(colon == std::string::npos ? rc : rc.substr(colon + 1));
    }
    if (a.chat_flags.have_prompt) {  // -p with -sys: the user's turn
      auto* m = chat->add_messages();
      m->set_role("user");
      m->set_content(a.chat_flags.prompt);
    }
  } else {
    req.set_text(a.chat_flags.prompt);
  }
  const flags::SamplingFlags& f = a.sampling;
  if (!f.samplers.empty()) throw InvalidArgument("--samplers: the server's order applies (the gRPC API carries no order)");
  if (!f.grammar.empty()) req.set_grammar(f.grammar);
  if (!f.json_schema.empty()) req.set_json_schema(f.json_schema);
  auto* s = req.mutable_sampling();
  if (f.temperature) s->set_temperature(*f.temperature);
  if (f.top_p) s->set_top_p(*f.top_p);
  if (f.min_p) s->set_min_p(*f.min_p);
  if (f.repeat_penalty) s->set_repetition_penalty(*f.repeat_penalty);
  if (f.presence_penalty) s->set_presence_penalty(*f.presence_penalty);
  if (f.frequency_penalty) s->set_frequency_penalty(*f.frequency_penalty);
  if (f.repeat_last_n) s->set_penalty_last_n(*f.repeat_last_n);
  if (f.top_k) s->set_top_k(*f.top_k);
  if (f.seed && *f.seed >= 0) s->set_seed(static_cast<uint64_t>(*f.seed));  // -1: the server's random seed
  if (f.n_predict && *f.n_predict >= 0) req.set_max_tokens(*f.n_predict);  // -1: the server's default
  for (const auto& x : a.stop) req.add_stop(x);
  req.set_ignore_eos(f.ignore_eos);
  return req;
}

int generate(v1::PipeLLM::Stub& stub, const GenArgs& a) {
  v1::GenerateRequest req;
  try {
    req = generate_request(a);
  } catch (const std::exception& e) {  // InvalidArgument, or CLI::ValidationError from --tokens
    std::cerr << "error: " << e.what() << "\n";
    return kUsageError;
  }
  grpc::ClientContext ctx;
  if (a.timeout_ms > 0) ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(a.timeout_ms));
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
    if (r.has_chunk()) {
      if (a.json) {
        nlohmann::json j = {{"text", r.chunk().text()},
                            {"token_ids", std::vector<int32_t>(r.chunk().token_ids().begin(), r.chunk().token_ids().end())}};
        std::cout << j.dump() << "\n" << std::flush;
      } else {
        std::cout << r.chunk().text() << std::flush;
      }
    } else if (r.has_final()) {
      const auto& f = r.final();
      const auto& u = f.usage();
      if (a.json) {
        nlohmann::json j = {{"finish_reason", finish_name(f.finish_reason())},
                            {"stop_string", f.stop_string()},
                            {"prompt_tokens", u.prompt_tokens()},
                            {"generated_tokens", u.generated_tokens()},
                            {"time_to_first_token_ms", u.time_to_first_token_ms()},
                            {"tokens_per_second", u.tokens_per_second()}};
        std::cout << j.dump() << "\n";
      } else {
        std::cout << "\n";
        std::cerr << "[" << finish_name(f.finish_reason()) << "] prompt " << u.prompt_tokens() << " tokens, generated "
                  << u.generated_tokens() << ", first token " << u.time_to_first_token_ms() << " ms, "
                  << u.tokens_per_second() << " tokens/s\n";
      }
    }
  }
  const grpc::Status st = reader->Finish();
  return st.ok() ? 0 : fail(st);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pipellm-client: talk to a pipellm-coordinator"};
  app.set_version_flag("--version", std::string("pipellm-client ") + pipellm::pipellm_version());
  // --addr/--api-key/--tls-ca work before or after the sub-command (`generate --addr A -p ...`).
  app.fallthrough();
  std::string addr = "127.0.0.1:50051";
  app.add_option("--addr", addr, "coordinator address")->capture_default_str();
  const char* key_env = std::getenv("PIPELLM_API_KEY");
  std::string api_key = key_env ? key_env : "", tls_ca;
  app.add_option("--api-key", api_key, "API key sent as 'authorization: Bearer' (default: $PIPELLM_API_KEY)");
  app.add_option("--tls-ca", tls_ca, "PEM file of trusted roots: connect with TLS");
  app.require_subcommand(1);

  GenArgs g;
  auto* gen = app.add_subcommand("generate", "stream a completion");
  flags::add_chat_flags(*gen, g.chat_flags);
  flags::add_sampling_flags(*gen, g.sampling);
  gen->add_option("--tokens", g.tokens, "prompt as token ids: 1,2,3");
  gen->add_option("--chat", g.chat, "chat message role:content (repeatable)")->allow_extra_args(false);
  gen->add_option("--stop,-r,--reverse-prompt", g.stop, "stop string (repeatable)")->allow_extra_args(false);
  gen->add_option("--timeout-ms", g.timeout_ms, "deadline");
  gen->add_flag("--json", g.json, "one JSON object per message");

  std::string tok_text;
  bool tok_special = true;
  auto* tok = app.add_subcommand("tokenize", "text -> token ids");
  tok->add_option("text", tok_text)->required();
  tok->add_option("--add-special", tok_special);
  std::string detok_ids;
  auto* detok = app.add_subcommand("detokenize", "token ids -> text");
  detok->add_option("ids", detok_ids, "1,2,3")->required();
  auto* info = app.add_subcommand("info", "model and server information");
  std::string health_service;
  auto* health = app.add_subcommand("health", "grpc.health.v1 check (exit 0 when SERVING)");
  health->add_option("--service", health_service);

  if (auto code = flags::parse(app, argc, argv, kUsageError)) return *code;
  if (g.chat_flags.conversation) {
    std::cerr << "error: -cnv is pipellm generate's; pipellm-client sends one request\n";
    return kUsageError;
  }
  std::shared_ptr<grpc::Channel> channel;
  try {
    channel = pipellm::coord::make_client_channel(addr, api_key, tls_ca);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  auto stub = v1::PipeLLM::NewStub(channel);
  try {
    if (gen->parsed()) return generate(*stub, g);
    if (tok->parsed()) {
      grpc::ClientContext ctx;
      v1::TokenizeRequest req;
      v1::TokenizeResponse res;
      req.set_text(tok_text);
      req.set_add_special(tok_special);
      const auto st = stub->Tokenize(&ctx, req, &res);
      if (!st.ok()) return fail(st);
      nlohmann::json j = {{"ids", std::vector<int32_t>(res.ids().begin(), res.ids().end())},
                          {"pieces", std::vector<std::string>(res.pieces().begin(), res.pieces().end())}};
      std::cout << j.dump() << "\n";
      return 0;
    }
    if (detok->parsed()) {
      grpc::ClientContext ctx;
      v1::DetokenizeRequest req;
      v1::DetokenizeResponse res;
      for (int32_t id : parse_ids(detok_ids, "ids")) req.add_ids(id);
      const auto st = stub->Detokenize(&ctx, req, &res);
      if (!st.ok()) return fail(st);
      std::cout << res.text() << "\n";
      return 0;
    }
    if (info->parsed()) {
      grpc::ClientContext ctx;
      v1::ModelInfo res;
      const auto st = stub->GetModelInfo(&ctx, v1::ModelInfoRequest{}, &res);
      if (!st.ok()) return fail(st);
      nlohmann::json j = {{"model_name", res.model_name()},     {"architecture", res.architecture()},
                          {"n_vocab", res.n_vocab()},           {"n_layer", res.n_layer()},
                          {"n_embd", res.n_embd()},             {"context_length", res.context_length()},
                          {"max_sequences", res.max_sequences()}, {"n_stages", res.n_stages()},
                          {"plan", res.plan()},                 {"backend", res.backend()},
                          {"serving", res.serving()},           {"queued", res.queued()},
                          {"in_flight", res.in_flight()}};
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    if (health->parsed()) {
      auto hstub = grpc::health::v1::Health::NewStub(channel);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse res;
      req.set_service(health_service);
      const auto st = hstub->Check(&ctx, req, &res);
      if (!st.ok()) return fail(st);
      std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(res.status()) << "\n";
      return res.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);  // a bad value found after the parse (token ids): usage error
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

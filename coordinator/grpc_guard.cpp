#include "coordinator/grpc_guard.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "coordinator/grpc_interceptors.h"
#include "coordinator/port_probe.h"
#include "coordinator/serving_setup.h"

namespace pipellm::coord {

namespace v1 = pipellm::v1;

const char* grpc_code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

grpc::Status GuardedPipeLLMService::authorize(grpc::ServerContext* ctx, const char* method, std::string& principal) {
  std::string authorization;
  const auto& md = ctx->client_metadata();
  const auto it = md.find("authorization");
  if (it != md.end()) authorization.assign(it->second.data(), it->second.size());
  const AuthResult a = check_bearer(ctx_.keys, authorization);
  if (a.ok()) {
    principal = a.principal;
    return grpc::Status::OK;
  }
  spdlog::warn("grpc: {} from {}: refused ({})", method, ctx->peer(), a.code());
  ctx_.metrics.count_refusal("grpc", a.code());
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, a.message() + " [" + a.code() + "]");
}

grpc::Status GuardedPipeLLMService::counted(const char* method, grpc::Status st) {
  ctx_.metrics.count_request("grpc", method, grpc_code_name(st.error_code()));
  return st;
}

grpc::Status GuardedPipeLLMService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                             grpc::ServerWriter<v1::GenerateResponse>* out) {
  std::string principal;
  if (auto st = authorize(ctx, "Generate", principal); !st.ok()) return counted("Generate", st);
  auto lease = ctx_.streams.try_acquire(principal);
  if (!lease) {
    const std::string msg = "too many concurrent streams for " + principal + " (limit " +
                            std::to_string(ctx_.streams.limit()) + ") [too_many_streams]";
    spdlog::info("grpc: Generate refused: {}", msg);
    ctx_.metrics.count_refusal("grpc", "too_many_streams");
    return counted("Generate", grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, msg));
  }
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status st = inner_.Generate(ctx, req, out);
  ctx_.metrics.observe_request_duration(
      "grpc", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return counted("Generate", st);
}

grpc::Status GuardedPipeLLMService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                             v1::TokenizeResponse* out) {
  std::string principal;
  if (auto st = authorize(ctx, "Tokenize", principal); !st.ok()) return counted("Tokenize", st);
  return counted("Tokenize", inner_.Tokenize(ctx, req, out));
}

grpc::Status GuardedPipeLLMService::Detokenize(grpc::ServerContext* ctx, const v1::DetokenizeRequest* req,
                                               v1::DetokenizeResponse* out) {
  std::string principal;
  if (auto st = authorize(ctx, "Detokenize", principal); !st.ok()) return counted("Detokenize", st);
  return counted("Detokenize", inner_.Detokenize(ctx, req, out));
}

grpc::Status GuardedPipeLLMService::GetModelInfo(grpc::ServerContext* ctx, const v1::ModelInfoRequest* req,
                                                 v1::ModelInfo* out) {
  std::string principal;
  if (auto st = authorize(ctx, "GetModelInfo", principal); !st.ok()) return counted("GetModelInfo", st);
  return counted("GetModelInfo", inner_.GetModelInfo(ctx, req, out));
}

namespace {

// TLS credentials when --tls-cert/--tls-key are set, else insecure. Throws Error naming a file.
std::shared_ptr<grpc::ServerCredentials> grpc_credentials(const ServingOptions& o) {
  if (o.tls_cert.empty() && o.tls_key.empty()) return grpc::InsecureServerCredentials();
  if (o.tls_cert.empty() || o.tls_key.empty()) throw Error("tls: give both --tls-cert and --tls-key");
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({read_tls_file(o.tls_key, "key"), read_tls_file(o.tls_cert, "certificate")});
  return grpc::SslServerCredentials(ssl);
}

// PipeLLMService behind the guard, on a grpc::Server with the health service and reflection.
class GrpcServer final : public GrpcFrontDoor {
 public:
  GrpcServer(const std::string& address, const ServingOptions& o, FrontDoorContext ctx, const std::string& backend)
      : service_(ctx.sched, ctx.text, ctx.limits, backend), guarded_(service_, ctx) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc_credentials(o), &port_);
    // gRPC sets SO_REUSEPORT by default: a second server on a busy port would then start and
    // the two would split the calls. The port is this coordinator's alone.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.SetMaxReceiveMessageSize(static_cast<int>(o.max_body_bytes));
    builder.RegisterService(&guarded_);
    builder.experimental().SetInterceptorCreators(guard_interceptors(ctx));  // reflection's key, bad protobufs
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      const auto [host, port] = split_host_port(address);
      const std::string why = bind_failure(host, port);
      throw Error("grpc: cannot listen on " + address + (why.empty() ? "" : ": " + why));
    }
    set_serving(false);
  }
  ~GrpcServer() override { stop(); }

  int port() const override { return port_; }
  void set_serving(bool serving) override {
    auto* health = server_->GetHealthCheckService();
    health->SetServingStatus(serving);
    health->SetServingStatus("pipellm.v1.PipeLLM", serving);
  }
  void stop() override {
    if (stopped_) return;
    stopped_ = true;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

 private:
  PipeLLMService service_;
  GuardedPipeLLMService guarded_;  // API keys, stream limits, metrics
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool stopped_ = false;
};

}  // namespace

std::unique_ptr<GrpcFrontDoor> make_grpc_front_door(const std::string& address, const ServingOptions& o,
                                                    FrontDoorContext ctx, const std::string& backend) {
  return std::make_unique<GrpcServer>(address, o, ctx, backend);
}

}  // namespace pipellm::coord

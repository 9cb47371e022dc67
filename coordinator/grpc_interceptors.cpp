#include "coordinator/grpc_interceptors.h"

#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

namespace pipellm::coord {

namespace {

using grpc::experimental::InterceptionHookPoints;

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

class GuardInterceptor final : public grpc::experimental::Interceptor {
 public:
  GuardInterceptor(grpc::experimental::ServerRpcInfo* info, FrontDoorContext ctx, bool reflection)
      : ctx_(ctx), reflection_(reflection), method_(info->method()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (reflection_ && m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      authorize(*m->GetRecvInitialMetadata());
    }
    if (denied_ && m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      // The reflection request, typed as the service's request message (a protobuf Message):
      // emptied, so the service learns nothing to answer.
      if (void* msg = m->GetRecvMessage()) static_cast<google::protobuf::Message*>(msg)->Clear();
    }
    if (denied_ && m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      if (grpc::ByteBuffer* out = m->GetSerializedSendMessage()) out->Clear();
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      if (denied_) {
        m->ModifySendStatus(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, refusal_));
      } else if (!reflection_) {
        const grpc::Status st = m->GetSendStatus();
        if (st.error_code() == grpc::StatusCode::INTERNAL && st.error_message().empty()) {
          m->ModifySendStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                           method_ + ": the request is not a valid protobuf message of this method "
                                                     "(it could not be parsed) [malformed_request]"));
          ctx_.metrics.count_refusal("grpc", "malformed_request");
        }
      }
    }
    m->Proceed();
  }

 private:
  void authorize(const std::multimap<grpc::string_ref, grpc::string_ref>& md) {
    std::string authorization;
    const auto it = md.find("authorization");
    if (it != md.end()) authorization.assign(it->second.data(), it->second.size());
    const AuthResult a = check_bearer(ctx_.keys, authorization);
    if (a.ok()) return;
    denied_ = true;
    refusal_ = a.message() + " [" + a.code() + "]";
    spdlog::warn("grpc: {} refused ({})", method_, a.code());
    ctx_.metrics.count_refusal("grpc", a.code());
  }

  FrontDoorContext ctx_;
  bool reflection_;
  std::string method_;
  bool denied_ = false;
  std::string refusal_;
};

class GuardFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit GuardFactory(FrontDoorContext ctx) : ctx_(ctx) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    const std::string m = info->method();
    if (starts_with(m, "/grpc.reflection.")) return ctx_.keys.enabled() ? new GuardInterceptor(info, ctx_, true) : nullptr;
    if (starts_with(m, "/pipellm.")) return new GuardInterceptor(info, ctx_, false);
    return nullptr;  // health: open, and parsed by gRPC itself
  }

 private:
  FrontDoorContext ctx_;
};

}  // namespace

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> guard_interceptors(
    FrontDoorContext ctx) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> v;
  v.push_back(std::make_unique<GuardFactory>(ctx));
  return v;
}

}  // namespace pipellm::coord

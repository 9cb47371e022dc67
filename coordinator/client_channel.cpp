#include "coordinator/client_channel.h"

#include <grpcpp/support/client_interceptor.h>

#include <fstream>
#include <sstream>

#include <stdexcept>

namespace pipellm::coord {

namespace {

namespace gx = grpc::experimental;

class BearerInterceptor : public gx::Interceptor {
 public:
  explicit BearerInterceptor(const std::string& key) : value_("Bearer " + key) {}
  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", value_});
    }
    methods->Proceed();
  }

 private:
  std::string value_;
};

class BearerFactory : public gx::ClientInterceptorFactoryInterface {
 public:
  explicit BearerFactory(std::string key) : key_(std::move(key)) {}
  gx::Interceptor* CreateClientInterceptor(gx::ClientRpcInfo*) override { return new BearerInterceptor(key_); }

 private:
  std::string key_;
};

}  // namespace

std::shared_ptr<grpc::Channel> make_client_channel(const std::string& address, const std::string& api_key,
                                                   const std::string& tls_ca) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!tls_ca.empty()) {
    std::ifstream in(tls_ca, std::ios::binary);
    if (!in) throw std::runtime_error("tls: cannot read the CA file '" + tls_ca + "'");
    std::ostringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    creds = grpc::SslCredentials(ssl);
  }
  std::vector<std::unique_ptr<gx::ClientInterceptorFactoryInterface>> interceptors;
  if (!api_key.empty()) interceptors.push_back(std::make_unique<BearerFactory>(api_key));
  return gx::CreateCustomChannelWithInterceptors(address, creds, grpc::ChannelArguments(), std::move(interceptors));
}

}  // namespace pipellm::coord

#include "coordinator/serving_setup.h"

#include <grpcpp/security/server_credentials.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace pipellm::coord {

namespace {

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(std::string("tls: cannot read the ") + what + " '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_port_file(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << port << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace

ApiKeys load_api_keys(const ServingOptions& o) {
  const char* env = std::getenv("PIPELLM_API_KEYS");
  ApiKeys keys = ApiKeys::load(o.api_keys_file, env ? env : "");
  if (keys.enabled()) {
    spdlog::info("serving: API keys required ({} key(s))", keys.size());
  } else {
    spdlog::info("serving: no API keys configured; every local client is admitted");
  }
  return keys;
}

void check_listen_address(const std::string& address, const ServingOptions& o, const char* front_door) {
  const auto [host, port] = split_host_port(address);
  (void)port;
  if (!is_loopback_host(host) && !o.allow_remote) {
    throw InvalidArgument(std::string(front_door) + ": listening on '" + address +
                          "' reaches beyond this machine; pass --allow-remote to mean it (and consider --api-keys-file "
                          "and --tls-cert)");
  }
  if (!is_loopback_host(host) && o.tls_cert.empty()) spdlog::warn("{}: listening on {} without TLS", front_door, address);
}

std::shared_ptr<grpc::ServerCredentials> grpc_credentials(const ServingOptions& o) {
  if (o.tls_cert.empty() && o.tls_key.empty()) return grpc::InsecureServerCredentials();
  if (o.tls_cert.empty() || o.tls_key.empty()) throw Error("tls: give both --tls-cert and --tls-key");
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({read_file(o.tls_key, "key"), read_file(o.tls_cert, "certificate")});
  return grpc::SslServerCredentials(ssl);
}

std::unique_ptr<HttpFrontDoor> start_http(const ServingOptions& o, FrontDoorContext ctx) {
  if (o.http_listen == "off") return nullptr;
  const bool given = !o.http_listen.empty();
  HttpOptions h;
  h.listen = given ? o.http_listen : kDefaultHttpListen;
  check_listen_address(h.listen, o, "http");
  h.tls_cert = o.tls_cert;
  h.tls_key = o.tls_key;
  h.max_body_bytes = o.max_body_bytes;
  h.threads = o.http_threads;
  h.model_alias = o.served_model_name;
  std::unique_ptr<HttpFrontDoor> http;
  try {
    http = std::make_unique<HttpFrontDoor>(ctx, h);
  } catch (const Error& e) {
    if (given) throw;
    spdlog::warn("{} (the default HTTP address; pass --http-listen to choose one, 'off' to silence this)", e.what());
    return nullptr;
  }
  const std::string host = split_host_port(h.listen).first;
  spdlog::info("coordinator: HTTP{} on {}:{} (OpenAI-compatible /v1, /metrics)", http->tls() ? "S" : "", host,
               http->port());
  if (!o.http_port_file.empty()) write_port_file(o.http_port_file, http->port());
  return http;
}

}  // namespace pipellm::coord

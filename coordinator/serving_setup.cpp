#include "coordinator/serving_setup.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace pipellm::coord {

namespace {

void write_port_file(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << port << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace

std::string read_tls_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(std::string("tls: cannot read the ") + what + " '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ApiKeys load_api_keys(const ServingOptions& o) {
  const char* env = std::getenv("PIPELLM_API_KEYS");
  ApiKeys keys = ApiKeys::load(o.api_keys_file, env ? std::optional<std::string>(env) : std::nullopt, o.api_keys);
  if (keys.enabled()) {
    spdlog::info("serving: API keys required ({} key(s))", keys.size());
  } else {
    spdlog::info("serving: no API keys configured; every local client is admitted");
  }
  return keys;
}

void require_loopback_or_allowed(const std::string& address, bool allow_remote, const std::string& what,
                                 const std::string& advice) {
  const std::string host = split_host_port(address).first;
  if (!is_loopback_host(host) && !allow_remote) {
    throw InvalidArgument(what + ": listening on '" + address + "' reaches beyond this machine; pass --allow-remote to mean it (" +
                          advice + ")");
  }
}

void check_listen_address(const std::string& address, const ServingOptions& o, const char* front_door) {
  require_loopback_or_allowed(address, o.allow_remote, front_door, "and consider --api-keys-file and --tls-cert");
  if (!is_loopback_host(split_host_port(address).first) && o.tls_cert.empty()) {
    spdlog::warn("{}: listening on {} without TLS", front_door, address);
  }
}

bool grpc_built() {
#ifdef PIPELLM_HAVE_GRPC
  return true;
#else
  return false;
#endif
}

std::unique_ptr<GrpcFrontDoor> start_grpc(const GrpcListen& l, const ServingOptions& o, FrontDoorContext ctx) {
  if (l.address == "off") {
    if (!l.port_file.empty()) {
      throw InvalidArgument("--port-file: the gRPC front door is off (--listen off); use --http-port-file");
    }
    spdlog::info("coordinator: gRPC front door off (--listen off)");
    return nullptr;
  }
#ifdef PIPELLM_HAVE_GRPC
  check_listen_address(l.address, o, "grpc");
  auto door = make_grpc_front_door(l.address, o, ctx, l.backend);
  const std::string host = split_host_port(l.address).first;
  spdlog::info("coordinator: gRPC{} on {}:{}; backend {}", o.tls_cert.empty() ? "" : " (TLS)", host, door->port(),
               l.backend);
  if (!l.port_file.empty()) write_port_file(l.port_file, door->port());
  return door;
#else
  (void)o;
  (void)ctx;
  if (l.given || !l.port_file.empty()) {
    throw InvalidArgument("grpc: " + std::string(l.given ? "--listen " + l.address : "--port-file " + l.port_file) +
                          ": this pipellm-coordinator was built without gRPC (HTTP front door only); pass "
                          "--listen off, or rebuild where gRPC, protobuf and grpc_cpp_plugin are found");
  }
  spdlog::info("coordinator: gRPC front door off (built without gRPC; HTTP only)");
  return nullptr;
#endif
}

std::unique_ptr<Embedder> start_embeddings(const EmbeddingSetup& s) {
  if (!s.enabled) return nullptr;
  if (s.backend != "inprocess" || s.device != "cpu") {
    // Embeddings do not go through the stages yet: this process computes them on its CPU.
    spdlog::warn("coordinator: embeddings run on this machine's CPU, beside {} generation (their own copy of the "
                 "stage over the mapped file): slower than the generation's {}",
                 s.backend == "inprocess" ? "the in-process " + s.device : "the " + s.backend + " stages'",
                 s.backend == "inprocess" ? s.device : std::string("devices"));
  }
  EmbedderOptions eo;
  eo.n_ctx = s.n_ctx;
  eo.n_threads = s.n_threads;
  eo.max_batch_tokens = s.max_batch_tokens;
  if (!s.pooling.empty()) eo.pooling = parse_pooling(s.pooling);
  auto e = Embedder::open(s.model_path, eo);
  spdlog::info("coordinator: embeddings on (/v1/embeddings, /embedding), pooling {}{}", pooling_name(e->pooling()),
               s.pooling.empty() ? " (the model's)" : "");
  if (e->pooling() == Pooling::None) {
    spdlog::warn("coordinator: pooling none: /v1/embeddings refuses it (one vector per token); pass --pooling "
                 "mean|cls|last for OpenAI's route");
  }
  return e;
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
  h.limits = o.http_limits;
  h.model_alias = o.served_model_name;
  h.cors_origins = o.cors_origins;
  h.spm_infill = o.spm_infill;
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

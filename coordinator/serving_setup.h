// Glue between coordinator_main and the serving pieces: API keys from the options and the
// environment, the listen-address policy, TLS credentials for gRPC, the HTTP front door.
#pragma once
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "coordinator/http_server.h"
#include "coordinator/serving_options.h"

namespace pipellm::coord {

// --api-keys-file and $PIPELLM_API_KEYS; logs how many keys (never the keys).
ApiKeys load_api_keys(const ServingOptions& o);
// Throws InvalidArgument unless `address` is loopback or --allow-remote was given.
void check_listen_address(const std::string& address, const ServingOptions& o, const char* front_door);
// TLS credentials when --tls-cert/--tls-key are set, else insecure. Throws Error naming a file.
std::shared_ptr<grpc::ServerCredentials> grpc_credentials(const ServingOptions& o);
// The HTTP front door, or nullptr when off (or when the default port is busy: a warning).
std::unique_ptr<HttpFrontDoor> start_http(const ServingOptions& o, FrontDoorContext ctx);

}  // namespace pipellm::coord

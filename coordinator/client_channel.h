// The gRPC channel of pipellm-client: TLS when a CA file is given, and an API key sent as
// `authorization: Bearer KEY` metadata on every call (by a client interceptor).
#pragma once
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace pipellm::coord {

// `api_key` empty: no metadata. `tls_ca` empty: plaintext; else a PEM file of trusted roots.
// Throws std::runtime_error naming an unreadable CA file.
std::shared_ptr<grpc::Channel> make_client_channel(const std::string& address, const std::string& api_key,
                                                   const std::string& tls_ca);

}  // namespace pipellm::coord

// The OpenAI-compatible HTTP front door (cpp-httplib), served beside gRPC on the same
// scheduler: POST /v1/completions, POST /v1/chat/completions (JSON, or server-sent events with
// stream:true), GET /v1/models, GET /health, POST /tokenize, POST /detokenize, GET /metrics.
// Every route but /health needs `Authorization: Bearer KEY` when API keys are configured.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "coordinator/front_door.h"

namespace pipellm::coord {

struct HttpOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks one
  std::string tls_cert, tls_key;          // both set: HTTPS
  size_t max_body_bytes = 1 << 20;        // larger bodies get 413
  int threads = 64;                       // requests processed at once (worker threads)
  size_t max_header_bytes = 64 << 10;     // request line + headers; larger: 431
  int max_headers = 256;                  // header lines; more: 431
  int header_timeout_ms = 10000;          // the header block must arrive within this
  int read_timeout_ms = 30000;            // the body must arrive within this
  int max_connections = 4096;             // open connections overall; more: 503
  int max_connections_per_client = 512;   // open connections per client address; more: 503
  std::string model_alias;                // the model id in responses (default: the model's name)
};

class HttpFrontDoor {
 public:
  // Binds the address (throws Error naming it, or the TLS files) and starts serving.
  HttpFrontDoor(FrontDoorContext ctx, HttpOptions opt);
  ~HttpFrontDoor();  // stop()
  HttpFrontDoor(const HttpFrontDoor&) = delete;
  HttpFrontDoor& operator=(const HttpFrontDoor&) = delete;

  int port() const;
  bool tls() const;
  // Stops accepting, ends open streams (their sequences are cancelled), joins the thread.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pipellm::coord

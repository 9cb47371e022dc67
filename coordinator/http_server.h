// The OpenAI-compatible HTTP front door (cpp-httplib), served beside gRPC on the same
// scheduler: POST /v1/completions, POST /v1/chat/completions (JSON, or server-sent events with
// stream:true), GET /v1/models, GET /v1/models/{id}, GET /health, POST /tokenize,
// POST /detokenize, GET /metrics; and llama-server's POST /completion, POST /apply-template,
// GET /props, GET /slots (http_llama_routes.h); embeddings with --embeddings: POST /v1/embeddings and
// llama-server's POST /embedding, /embeddings (http_embeddings.h).
// Every route but /health needs `Authorization: Bearer KEY` when API keys are configured.
// Before that, Host, Origin and a POST's Content-Type are checked (http_origin.h); a known
// route asked with another method gets 405 with Allow.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/front_door.h"
#include "coordinator/http_limits.h"

namespace pipellm::coord {

struct HttpOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks one
  std::string tls_cert, tls_key;          // both set: HTTPS
  size_t max_body_bytes = 1 << 20;        // larger bodies get 413
  int threads = 64;                       // requests processed at once (worker threads)
  HttpLimits limits;                      // enforced by the gate, over HTTP and HTTPS alike
  std::string model_alias;                // the model id in responses (default: the model's name)
  std::vector<std::string> cors_origins;  // browser origins allowed besides this server (http_origin.h)
  bool spm_infill = false;                // /infill in suffix-prefix-middle order (--spm-infill)
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
